//! Where everything kctl prints goes: commands write through an [`Output`], never to the
//! process's streams directly, so tests can capture what a command printed.

use std::fmt::Display;
use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Standard output and standard error, or buffers in tests.
pub struct Output {
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}

/// What a captured [`Output`] received.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("capture lock")).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("capture lock")).into_owned()
    }
}

struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Output {
    /// The process's standard output and standard error.
    pub fn stdio() -> Output {
        Output {
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
        }
    }

    /// An output that keeps what it is given, for tests.
    pub fn capture() -> (Output, Captured) {
        let captured = Captured::default();
        let output = Output {
            out: Box::new(Shared(captured.out.clone())),
            err: Box::new(Shared(captured.err.clone())),
        };
        (output, captured)
    }

    /// Writes one line to standard output.
    pub fn line(&mut self, text: impl Display) -> Result<()> {
        writeln!(self.out, "{text}").map_err(Error::Output)
    }

    /// Writes text as it is (no newline added) and flushes, for streams such as logs.
    pub fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(Error::Output)?;
        self.out.flush().map_err(Error::Output)
    }

    /// Writes text, adding a newline unless it ends with one.
    pub fn text(&mut self, text: &str) -> Result<()> {
        if text.is_empty() || text.ends_with('\n') {
            self.out.write_all(text.as_bytes()).map_err(Error::Output)
        } else {
            self.line(text)
        }
    }

    /// Writes one line to standard error: notes and warnings, never data.
    pub fn note(&mut self, text: impl Display) -> Result<()> {
        writeln!(self.err, "{text}").map_err(Error::Output)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::Output)?;
        self.err.flush().map_err(Error::Output)
    }
}
