//! The Kubernetes resource quantity: `100m`, `1.5Gi`, `2e3`, `128974848`.
//!
//! The grammar, as Kubernetes' `resource.ParseQuantity` has it:
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | + <number> | - <number>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= e <signedInteger> | E <signedInteger>
//! ```
//!
//! The value is kept exactly in thousandths ("millis"); finer precision is rounded up (away from
//! zero), as Kubernetes rounds `0.1m` up to `1m`. [`Quantity`]'s `Display` is Kubernetes'
//! canonical form (`1.5Gi` prints `1536Mi`, `0.5` prints `500m`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("quantity is empty")]
    Empty,
    #[error("invalid quantity {input:?}: {reason}")]
    Invalid { input: String, reason: String },
    #[error("quantity {input:?} is out of range")]
    OutOfRange { input: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a quantity was written, which its canonical form keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `k`, `M`, `G`... and `m`, or no suffix.
    DecimalSI,
    /// `Ki`, `Mi`, `Gi`...
    BinarySI,
    /// `e3`, `E-2`...
    DecimalExponent,
}

/// A parsed quantity. Equality and order compare values, not spelling (`1k == 1000`).
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    millis: i128,
    format: Format,
}

/// At most this many significant digits are accepted (i128 holds 38).
const MAX_DIGITS: usize = 36;

impl Quantity {
    pub fn parse(input: &str) -> Result<Self> {
        parse(input)
    }

    /// A quantity of `millis` thousandths.
    pub fn from_millis(millis: i128, format: Format) -> Self {
        Quantity { millis, format }
    }

    /// The value in thousandths: `100m` is 100, `1` is 1000.
    pub fn milli_value(&self) -> i128 {
        self.millis
    }

    /// The value rounded up to an integer, as Kubernetes' `Value()`: bytes for memory, cores
    /// for cpu (`100m` is 1).
    pub fn value(&self) -> i128 {
        let whole = self.millis / 1000;
        if self.millis % 1000 > 0 {
            whole + 1
        } else {
            whole
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_negative(&self) -> bool {
        self.millis < 0
    }

    pub fn is_zero(&self) -> bool {
        self.millis == 0
    }

    /// The canonical string in k8s-openapi's wrapper, for writing back into objects.
    pub fn to_k8s(&self) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
        k8s_openapi::apimachinery::pkg::api::resource::Quantity(self.to_string())
    }
}

impl FromStr for Quantity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse(s)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = Error;

    fn try_from(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Result<Self> {
        parse(&q.0)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.millis == other.millis
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.millis.cmp(&other.millis)
    }
}

fn invalid(input: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        input: input.to_string(),
        reason: reason.into(),
    }
}

fn parse(input: &str) -> Result<Quantity> {
    if input.is_empty() {
        return Err(Error::Empty);
    }
    let bytes = input.as_bytes();
    let mut pos = 0;
    let negative = match bytes[0] {
        b'-' => {
            pos += 1;
            true
        }
        b'+' => {
            pos += 1;
            false
        }
        _ => false,
    };
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_digits = &input[int_start..pos];
    let mut frac_digits = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_digits = &input[frac_start..pos];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(invalid(input, "expected a number"));
    }
    let suffix = &input[pos..];
    let (format, exp10, binary_shift) = parse_suffix(input, suffix)?;

    // value = digits * 2^binary_shift * 10^(exp10 - frac_len), kept in millis (hence + 3).
    let mut digits = format!("{int_digits}{frac_digits}");
    let mut scale: i64 = exp10 + 3 - frac_digits.len() as i64;
    let trimmed = digits.trim_end_matches('0');
    scale += (digits.len() - trimmed.len()) as i64;
    digits.truncate(trimmed.len());
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(Quantity { millis: 0, format });
    }
    if digits.len() > MAX_DIGITS {
        return Err(Error::OutOfRange {
            input: input.to_string(),
        });
    }
    let out_of_range = || Error::OutOfRange {
        input: input.to_string(),
    };
    let mantissa: u128 = digits.parse().map_err(|_| out_of_range())?;
    let mantissa = mantissa
        .checked_mul(1u128 << binary_shift)
        .ok_or_else(out_of_range)?;
    let magnitude = if scale >= 0 {
        let factor = 10u128
            .checked_pow(u32::try_from(scale).map_err(|_| out_of_range())?)
            .ok_or_else(out_of_range)?;
        mantissa.checked_mul(factor).ok_or_else(out_of_range)?
    } else {
        // Below a milli: round up, away from zero.
        match 10u128.checked_pow(u32::try_from(-scale).map_err(|_| out_of_range())?) {
            Some(divisor) => mantissa.div_ceil(divisor),
            None => 1,
        }
    };
    let magnitude = i128::try_from(magnitude).map_err(|_| out_of_range())?;
    Ok(Quantity {
        millis: if negative { -magnitude } else { magnitude },
        format,
    })
}

/// Returns the format, the power of ten and the power of two the suffix stands for.
fn parse_suffix(input: &str, suffix: &str) -> Result<(Format, i64, u32)> {
    let decimal = |exp| Ok((Format::DecimalSI, exp, 0));
    let binary = |shift| Ok((Format::BinarySI, 0, shift));
    match suffix {
        "" => decimal(0),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ if suffix.starts_with(['e', 'E']) => {
            let exponent = &suffix[1..];
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(input, "exponent must be an integer"));
            }
            let exp: i64 = exponent.parse().map_err(|_| Error::OutOfRange {
                input: input.to_string(),
            })?;
            if exp.abs() > 1000 {
                return Err(Error::OutOfRange {
                    input: input.to_string(),
                });
            }
            Ok((Format::DecimalExponent, exp, 0))
        }
        _ => Err(invalid(
            input,
            format!(
                "unknown suffix {suffix:?}: expected m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei \
                 or an exponent such as e3"
            ),
        )),
    }
}

/// Divides out `factor` as often as it goes, returning what is left and how many times.
fn remove_factors(mut value: i128, factor: i128) -> (i128, u32) {
    let mut times = 0;
    while value != 0 && value % factor == 0 {
        value /= factor;
        times += 1;
    }
    (value, times)
}

impl fmt::Display for Quantity {
    /// Kubernetes' canonical form: the largest exact suffix of the quantity's format; binary
    /// quantities below 1Ki or with a fraction fall back to decimal SI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0");
        }
        let mut format = self.format;
        if format == Format::BinarySI
            && (self.millis.abs() < 1024 * 1000 || self.millis % 1000 != 0)
        {
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let bytes = self.millis / 1000;
            let (_, times) = remove_factors(bytes, 1024);
            let times = times.min(6);
            // Exact: 1024^times divides the value.
            let amount = bytes / 1024i128.pow(times);
            return write!(f, "{amount}{}", SUFFIXES[times as usize]);
        }
        // Decimal: amount * 10^exponent, exponent a multiple of 3, starting from millis.
        let (mut amount, tens) = remove_factors(self.millis, 10);
        let mut exponent = tens as i64 - 3;
        while exponent % 3 != 0 {
            amount *= 10;
            exponent -= 1;
        }
        if format == Format::DecimalSI {
            while exponent > 18 {
                amount *= 1000;
                exponent -= 3;
            }
            let suffix = match exponent {
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            };
            write!(f, "{amount}{suffix}")
        } else if exponent == 0 {
            write!(f, "{amount}")
        } else {
            write!(f, "{amount}e{exponent}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn decimal_si() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("2k").value(), 2000);
        assert_eq!(q("1M").value(), 1_000_000);
        assert_eq!(q("3G").value(), 3_000_000_000);
        assert_eq!(q("1T").value(), 1_000_000_000_000);
        assert_eq!(q("1P").value(), 1_000_000_000_000_000);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("1.").milli_value(), 1000);
        assert_eq!(q("+3").milli_value(), 3000);
        assert_eq!(q("-2").milli_value(), -2000);
        assert_eq!(q("1.5").format(), Format::DecimalSI);
    }

    #[test]
    fn binary_si() {
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("1.5Gi").value(), 1_610_612_736);
        assert_eq!(q("128Mi").value(), 134_217_728);
        assert_eq!(q("1Ti").value(), 1 << 40);
        assert_eq!(q("1Pi").value(), 1 << 50);
        assert_eq!(q("2Ei").value(), 1 << 61);
        assert_eq!(q("1Gi").format(), Format::BinarySI);
    }

    #[test]
    fn decimal_exponent() {
        assert_eq!(q("2e3").value(), 2000);
        assert_eq!(q("2E3").value(), 2000);
        assert_eq!(q("1e-3").milli_value(), 1);
        assert_eq!(q("1.5e+2").value(), 150);
        assert_eq!(q("12e6").format(), Format::DecimalExponent);
    }

    #[test]
    fn sub_milli_precision_rounds_up() {
        assert_eq!(q("0.1m").milli_value(), 1);
        assert_eq!(q("1.0001").milli_value(), 1001);
        assert_eq!(q("-0.1m").milli_value(), -1);
        assert_eq!(q("1e-9").milli_value(), 1);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("0").milli_value(), 0);
        assert_eq!(q("0.000").milli_value(), 0);
    }

    #[test]
    fn invalid_forms() {
        for bad in [
            "1.5.5", "Ki", "-", "+", ".", "", "1 Gi", " 1", "1KI", "1ki", "1e", "1e1.5", "1e+",
            "1i", "1Kib", "abc", "1,5", "--1", "1m5", "0x10",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(Quantity::parse(""), Err(Error::Empty));
        assert_eq!(
            Quantity::parse("1.5.5").unwrap_err().to_string(),
            "invalid quantity \"1.5.5\": unknown suffix \".5\": expected m, k, M, G, T, P, E, \
             Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3"
        );
        assert_eq!(
            Quantity::parse("Ki").unwrap_err(),
            Error::Invalid {
                input: "Ki".into(),
                reason: "expected a number".into()
            }
        );
        assert_eq!(
            Quantity::parse("-").unwrap_err().to_string(),
            "invalid quantity \"-\": expected a number"
        );
        assert_eq!(
            Quantity::parse("1e1.5").unwrap_err().to_string(),
            "invalid quantity \"1e1.5\": exponent must be an integer"
        );
    }

    #[test]
    fn out_of_range() {
        assert!(matches!(
            Quantity::parse("1e100"),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            Quantity::parse("1e99999"),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            Quantity::parse("1234567890123456789012345678901234567890"),
            Err(Error::OutOfRange { .. })
        ));
        // Tiny values are fine: they round up to one milli.
        assert_eq!(q("1e-999").milli_value(), 1);
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("1Ki"), q("1024"));
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("-1") < q("0"));
        assert!(q("-1").is_negative());
        assert!(q("0m").is_zero());
    }

    #[test]
    fn canonical_form() {
        let canon = |s: &str| q(s).to_string();
        assert_eq!(canon("1.5Gi"), "1536Mi");
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1536"), "1536");
        assert_eq!(canon("1000"), "1k");
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1.5"), "1500m");
        assert_eq!(canon("100m"), "100m");
        assert_eq!(canon("0.1m"), "1m");
        assert_eq!(canon("2e3"), "2e3");
        assert_eq!(canon("1500e-3"), "1500e-3");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("512Ki"), "512Ki");
        assert_eq!(canon("100Ki"), "100Ki");
        assert_eq!(canon("0.5Ki"), "512");
        assert_eq!(canon("1.5Ki"), "1536");
        assert_eq!(canon("-1Gi"), "-1Gi");
        assert_eq!(canon("12M"), "12M");
        assert_eq!(q("1.5Gi").to_k8s().0, "1536Mi");
    }
}
