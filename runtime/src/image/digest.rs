//! sha256 digests: parsing, and a reader that hashes what passes through it.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use super::{Error, Result};

/// The only algorithm the store accepts.
pub(crate) const SHA256_PREFIX: &str = "sha256:";

/// Validate `digest` as `sha256:<64 lowercase hex>` and return the hex part.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str> {
    let invalid = |reason| Error::InvalidDigest {
        digest: digest.to_string(),
        reason,
    };
    let Some((alg, hex)) = digest.split_once(':') else {
        return Err(invalid("missing algorithm prefix"));
    };
    if alg != "sha256" {
        return Err(invalid("only sha256 is supported"));
    }
    if !is_sha256_hex(hex) {
        return Err(invalid("expected 64 lowercase hex characters"));
    }
    Ok(hex)
}

/// True for exactly 64 lowercase hex characters.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_of(data: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(data)))
}

/// Fail with [`Error::DigestMismatch`] unless `actual == expected`.
pub(crate) fn verify(what: impl FnOnce() -> String, expected: &str, actual: &str) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            what: what(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// Hashes (sha256) and counts every byte read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Read the rest of the stream (so the digest covers all of it) and return
    /// `(sha256:<hex>, bytes read)`.
    pub(crate) fn drain_and_finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.finish())
    }

    /// The digest and count of what was read so far.
    pub(crate) fn finish(self) -> (String, u64) {
        let digest = format!("{SHA256_PREFIX}{}", hex::encode(self.hasher.finalize()));
        (digest, self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_only_well_formed_sha256() {
        assert_eq!(sha256_hex(EMPTY).unwrap(), &EMPTY[7..]);
        for bad in [
            "",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c442",
            "sha256:../../../../etc/passwd",
        ] {
            assert!(
                matches!(sha256_hex(bad), Err(Error::InvalidDigest { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn hashing_reader_covers_unread_tail() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        let (digest, n) = r.drain_and_finish().unwrap();
        assert_eq!(n, 11);
        assert_eq!(digest, sha256_of(b"hello world"));
        assert_eq!(sha256_of(b""), EMPTY);
    }
}
