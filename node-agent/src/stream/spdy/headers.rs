//! SPDY/3 header blocks and their zlib compression.
//!
//! A header block is a count of name/value pairs, each a 32-bit length and bytes; several
//! values of one name are joined by NUL. Blocks travel zlib-compressed with the preset
//! [`DICTIONARY`], one compression context per direction for the whole
//! connection, each block ended by a sync flush so that it decompresses on its own.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{Error, Result, DICTIONARY};

/// The name/value pairs of one header block, names lower-case, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// An empty header block, as a SYN_REPLY carries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pair; the name is lower-cased, as SPDY/3 requires.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The first value of `name` (case-insensitive), up to any NUL separator.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }

    /// All pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the block has no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The uncompressed wire form.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + self
                .0
                .iter()
                .map(|(n, v)| 8 + n.len() + v.len())
                .sum::<usize>(),
        );
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (name, value) in &self.0 {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parses the uncompressed wire form, which must be consumed exactly.
    fn decode(mut raw: &[u8]) -> Result<Self> {
        fn take<'a>(raw: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
            if raw.len() < n {
                return Err(Error::InvalidFrame("header block is truncated".into()));
            }
            let (head, rest) = raw.split_at(n);
            *raw = rest;
            Ok(head)
        }
        fn len(raw: &mut &[u8]) -> Result<usize> {
            let b = take(raw, 4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        let count = len(&mut raw)?;
        // Each pair needs at least 8 bytes: refuse counts the block cannot hold.
        if count > raw.len() / 8 {
            return Err(Error::InvalidFrame(format!(
                "header block claims {count} pairs in {} bytes",
                raw.len()
            )));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let n = len(&mut raw)?;
            let name = take(&mut raw, n)?;
            let n = len(&mut raw)?;
            let value = take(&mut raw, n)?;
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            pairs.push((name, String::from_utf8_lossy(value).into_owned()));
        }
        if !raw.is_empty() {
            return Err(Error::InvalidFrame(format!(
                "{} stray bytes after the header block",
                raw.len()
            )));
        }
        Ok(Self(pairs))
    }
}

/// The sending side's compression context: every header block this end sends goes
/// through the one instance, in order.
pub struct HeaderCompressor {
    z: Compress,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor").finish_non_exhaustive()
    }
}

impl HeaderCompressor {
    /// A fresh context primed with the SPDY/3 dictionary.
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(DICTIONARY)
            .expect("a fresh deflate stream accepts a dictionary");
        Self { z }
    }

    /// Compresses one header block, ending it with a sync flush.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>> {
        let raw = headers.encode();
        let mut input = raw.as_slice();
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // Done once all input is in and the flush left room to spare in `out`.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

/// The receiving side's decompression context, fed every header block the peer sends.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor").finish_non_exhaustive()
    }
}

impl HeaderDecompressor {
    /// A fresh context; the dictionary is supplied when the stream asks for it.
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Decompresses and parses one header block.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers> {
        let mut input = block;
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let result = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - before_in) as usize;
            let made = self.z.total_out() - before_out;
            input = &input[used..];
            match result {
                Ok(Status::StreamEnd) => {
                    return Err(Error::Compression(
                        "peer ended the header compression stream".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| Error::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(Error::Compression(e.to_string())),
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && made == 0 && out.len() < out.capacity() {
                return Err(Error::Compression(
                    "header block does not decompress".into(),
                ));
            }
        }
        Headers::decode(&out)
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        // adler32, computed by hand so the test does not trust the zlib under test.
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in DICTIONARY {
            a = (a + byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6a7c2);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(DICTIONARY.ends_with(b",enq=0."));
    }

    /// Two consecutive blocks of one context, made by C zlib (Python's zlib with `zdict`,
    /// level 9, `Z_SYNC_FLUSH`): the second one only decodes with the first one's history.
    #[test]
    fn decodes_blocks_compressed_by_c_zlib() {
        let first = hex(
            "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45a024cc64610024398b\
             209198094adc8c0600000000ffff",
        );
        let second = hex("c2aa15540a2512d209000000ffff");
        let mut d = HeaderDecompressor::new();
        let h = d.decompress(&first).unwrap();
        assert_eq!(
            h,
            Headers::new()
                .with("streamtype", "error")
                .with("port", "80")
                .with("requestid", "0")
        );
        let h = d.decompress(&second).unwrap();
        assert_eq!(h.get("streamtype"), Some("data"));
        assert_eq!(h.get("port"), Some("80"));
        assert_eq!(h.get("requestID"), Some("0"));
    }

    #[test]
    fn round_trips_many_blocks_through_one_context() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        for i in 0..50 {
            let h = Headers::new()
                .with("streamtype", if i % 2 == 0 { "data" } else { "error" })
                .with("port", &(8000 + i).to_string())
                .with("requestid", &i.to_string())
                .with("x-long", &"v".repeat(i * 100));
            let block = c.compress(&h).unwrap();
            // A sync flush ends every block with an empty stored block.
            assert!(block.ends_with(&[0, 0, 0xff, 0xff]), "{block:?}");
            assert_eq!(d.decompress(&block).unwrap(), h);
        }
        let empty = c.compress(&Headers::new()).unwrap();
        assert!(d.decompress(&empty).unwrap().is_empty());
    }

    #[test]
    fn first_block_declares_the_dictionary() {
        let block = HeaderCompressor::new().compress(&Headers::new()).unwrap();
        // zlib header with FDICT set, then the dictionary's adler32.
        assert_eq!(block[1] & 0x20, 0x20);
        assert_eq!(&block[2..6], &0xe3c6a7c2u32.to_be_bytes());
    }

    #[test]
    fn rejects_garbage_and_lying_counts() {
        assert!(HeaderDecompressor::new()
            .decompress(b"not zlib at all")
            .is_err());
        assert!(Headers::decode(&[0, 0, 0, 9, 0, 0, 0, 1, b'a']).is_err());
        assert!(Headers::decode(&[0, 0, 0, 0, 7]).is_err());
        let multi =
            Headers::decode(&[0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0, 0, 3, b'x', 0, b'y']).unwrap();
        assert_eq!(multi.get("a"), Some("x"));
    }
}
