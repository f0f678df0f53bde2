//! Container logs in the CRI format.
//!
//! The per-container monitor writes a container's stdout and stderr into one file with a
//! [`LogWriter`]; the node agent reads them back for `kubectl logs` with [`read_logs`]. Each
//! record is one line, as containerd's CRI plugin writes them and kubelet reads them:
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F content
//! ```
//!
//! the time the record was written (RFC 3339 in UTC, always nine fractional digits), the
//! stream, a tag (`F`: this record ends a line; `P`: part of a line) and the content without
//! its newline. A line longer than the writer's maximum line size becomes `P` records of that
//! size followed by an `F` record with the rest; output that ends without a newline is written
//! as a `P` record by [`LogWriter::flush_partial`].
//!
//! Rotation is by size: a record that would take the file past `max_size` bytes goes to a
//! fresh file after `f` is renamed to `f.1` (`f.1` to `f.2`, and so on), keeping `max_files`
//! files in all, the current one included. [`read_logs`] reads the rotated files oldest first.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors from writing or reading log files; each names the file it touched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log file {path}: max_files must be at least 1")]
    NoFiles { path: PathBuf },
    #[error("malformed log line: {reason}")]
    Parse { reason: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// containerd's default `max_container_log_line_size`.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Which of a container's output streams a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn parse(s: &[u8]) -> Option<Stream> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point in time as seconds and nanoseconds since the Unix epoch (UTC).
///
/// Displays as RFC 3339 with nine fractional digits (`2016-10-06T00:17:09.669794202Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub secs: i64,
    /// Always below 1_000_000_000.
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            // A clock before 1970: clamp rather than fail a log write.
            Err(_) => Timestamp { secs: 0, nanos: 0 },
        }
    }

    pub fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp {
            secs: nanos.div_euclid(1_000_000_000),
            nanos: nanos.rem_euclid(1_000_000_000) as u32,
        }
    }

    pub fn unix_nanos(self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// Parses RFC 3339 (`2016-10-06T00:17:09.669794202Z`, any number of fractional digits,
    /// `Z` or a `±hh:mm` offset), as Go's `time.RFC3339Nano` does.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let digits = b.get(range)?;
            digits.iter().try_fold(0i64, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
            })
        };
        let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month as u32).into()
            || hour > 23
            || min > 59
            || sec > 59
        {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0u32;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 9 {
                    nanos = nanos * 10 + u32::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return None;
            }
            for _ in (i - start)..9 {
                nanos *= 10;
            }
        }
        let offset = match b.get(i..)? {
            b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if h > 23 || m > 59 {
                    return None;
                }
                let secs = h * 3600 + m * 60;
                if *sign == b'+' {
                    secs
                } else {
                    -secs
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month as u32, day as u32);
        Some(Timestamp {
            secs: days * 86_400 + hour * 3600 + min * 60 + sec - offset,
            nanos,
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.secs.div_euclid(86_400));
        let secs_of_day = self.secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60,
            self.nanos,
        )
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The path of the `n`th rotated file of `path` (`path.n`).
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Writes a container's stdout and stderr into one CRI-format log file, rotating it by size.
///
/// Each stream's output is buffered until a newline (or until it exceeds the maximum line
/// size); every call to [`write`](LogWriter::write) writes the records it completed before
/// returning, in one `write` per file.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    max_size: u64,
    max_files: usize,
    max_line: usize,
    /// Each stream's line so far, not yet written.
    pending: [Vec<u8>; 2],
    /// Records formatted but not yet written to `file`.
    out: Vec<u8>,
    clock: Box<dyn FnMut() -> Timestamp + Send>,
}

impl LogWriter {
    /// Opens `path` for appending (creating it and its directory if missing). The file is
    /// rotated once it would exceed `max_size` bytes (0: never), keeping `max_files` files.
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> Result<LogWriter> {
        if max_files == 0 {
            return Err(Error::NoFiles {
                path: path.to_owned(),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let file = open_append(path)?;
        let size = file.metadata().map_err(io_err(path))?.len();
        Ok(LogWriter {
            path: path.to_owned(),
            file,
            size,
            max_size,
            max_files,
            max_line: DEFAULT_MAX_LINE,
            pending: [Vec::new(), Vec::new()],
            out: Vec::new(),
            clock: Box::new(Timestamp::now),
        })
    }

    /// Sets the size past which a line is split into `P` records (default
    /// [`DEFAULT_MAX_LINE`]; at least 1).
    pub fn with_max_line(mut self, max_line: usize) -> LogWriter {
        self.max_line = max_line.max(1);
        self
    }

    /// Replaces the clock that stamps records (the system clock by default).
    pub fn with_clock(mut self, clock: impl FnMut() -> Timestamp + Send + 'static) -> LogWriter {
        self.clock = Box::new(clock);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data` from `stream`, writing a record for every line it completes.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let newline = rest.iter().position(|&c| c == b'\n');
            let (segment, next) = match newline {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let mut line = std::mem::take(&mut self.pending[stream.index()]);
            line.extend_from_slice(segment);
            // Split off full-size parts while more than a full part is left, so a line of
            // exactly `max_line` bytes stays one `F` record (as containerd does).
            let mut start = 0;
            while line.len() - start > self.max_line {
                self.record(stream, b'P', &line[start..start + self.max_line])?;
                start += self.max_line;
            }
            if newline.is_some() {
                self.record(stream, b'F', &line[start..])?;
                line.clear();
            } else {
                line.drain(..start);
            }
            self.pending[stream.index()] = line;
            rest = next;
        }
        self.flush_out()
    }

    /// Writes what `stream` has buffered without a newline as a `P` record: call it when the
    /// stream ends.
    pub fn flush_partial(&mut self, stream: Stream) -> Result<()> {
        let line = std::mem::take(&mut self.pending[stream.index()]);
        if !line.is_empty() {
            self.record(stream, b'P', &line)?;
        }
        self.flush_out()
    }

    /// Formats one record into `out`, first rotating if it would not fit in the current file.
    fn record(&mut self, stream: Stream, tag: u8, content: &[u8]) -> Result<()> {
        let start = self.out.len();
        let now = (self.clock)();
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "{now} {stream} {} ", tag as char);
        self.out.extend_from_slice(content);
        self.out.push(b'\n');
        let before = self.size + start as u64;
        if self.max_size > 0
            && before > 0
            && before + (self.out.len() - start) as u64 > self.max_size
        {
            let record = self.out.split_off(start);
            self.flush_out()?;
            self.rotate()?;
            self.out = record;
        }
        Ok(())
    }

    fn flush_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.out);
        // Count what was meant to be written even on failure: a short write still grew the
        // file, and rotation soon gives a fresh one.
        self.size += self.out.len() as u64;
        self.out.clear();
        written.map_err(io_err(&self.path))
    }

    /// Shifts `f.(n-1)` to `f.n` down to `f` to `f.1` (dropping the oldest) and reopens `f`.
    fn rotate(&mut self) -> Result<()> {
        for n in (1..self.max_files).rev() {
            let from = if n == 1 {
                self.path.clone()
            } else {
                rotated(&self.path, n - 1)
            };
            match fs::rename(&from, rotated(&self.path, n)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(&from)(err))
                }
                _ => {}
            }
        }
        if self.max_files == 1 {
            match fs::remove_file(&self.path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(&self.path)(err))
                }
                _ => {}
            }
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(io_err(path))
}

/// One logical log line: a record, or `P` records joined with the record that ended them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the line's first record was written.
    pub time: Timestamp,
    pub stream: Stream,
    /// The line has no end (yet): it was written without a newline, or cut by a limit.
    pub partial: bool,
    /// The content without the newline.
    pub content: Vec<u8>,
}

/// Parses one CRI log record (with or without its trailing newline).
pub fn parse_line(line: &[u8]) -> Result<LogLine> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.splitn(4, |&c| c == b' ');
    let err = |reason| Error::Parse { reason };
    let time = fields.next().unwrap_or_default();
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(Timestamp::parse)
        .ok_or(err("bad timestamp"))?;
    let stream = fields.next().ok_or(err("missing stream"))?;
    let stream = Stream::parse(stream).ok_or(err("unknown stream"))?;
    // Tags are separated by ':'; the first says whether the record is partial.
    let tags = fields.next().ok_or(err("missing tag"))?;
    let partial = match tags.split(|&c| c == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(err("unknown tag")),
    };
    Ok(LogLine {
        time,
        stream,
        partial,
        content: fields.next().unwrap_or_default().to_vec(),
    })
}

/// What [`read_logs`] returns: `since` filters first, then `tail_lines` keeps the last lines
/// of what is left, then `limit_bytes` cuts the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only the last this many lines.
    pub tail_lines: Option<usize>,
    /// Only lines written at or after this time (nanoseconds since the Unix epoch).
    pub since: Option<i64>,
    /// At most this many bytes of output, counting each line's content and its newline; the
    /// line that crosses the limit is cut short and marked partial.
    pub limit_bytes: Option<u64>,
}

/// Reads the logical lines of the log at `path` and its rotated files (`path.1`, ...), oldest
/// first, joining each stream's `P` records with the record that ends them.
///
/// Malformed records are skipped, as is a last record without a newline (still being written).
/// A read that races a rotation may miss or repeat a file's worth of lines.
pub fn read_logs(path: &Path, opts: &ReadOptions) -> Result<Vec<LogLine>> {
    let mut files = rotated_files(path)?;
    files.push(path.to_owned());
    let mut lines = Vec::new();
    let mut open: [Option<LogLine>; 2] = [None, None];
    let mut any_file = false;
    for file in &files {
        let data = match fs::read(file) {
            Ok(data) => data,
            // Rotated away since we listed it, or the current file between rename and reopen.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io_err(file)(err)),
        };
        any_file = true;
        let mut skipped = 0usize;
        // The last piece after the final newline is an unfinished record: skip it.
        let mut records: Vec<&[u8]> = data.split(|&c| c == b'\n').collect();
        records.pop();
        for record in records {
            let Ok(rec) = parse_line(record) else {
                skipped += 1;
                continue;
            };
            let slot = &mut open[rec.stream.index()];
            let line = match slot.take() {
                Some(mut line) => {
                    line.content.extend_from_slice(&rec.content);
                    line.partial = rec.partial;
                    line
                }
                None => rec,
            };
            if line.partial {
                *slot = Some(line);
            } else {
                lines.push(line);
            }
        }
        if skipped > 0 {
            tracing::warn!(path = %file.display(), skipped, "skipped malformed log records");
        }
    }
    if !any_file {
        return Err(io_err(path)(io::ErrorKind::NotFound.into()));
    }
    // Lines still open at the end have not been finished (yet).
    let mut unfinished: Vec<LogLine> = open.into_iter().flatten().collect();
    unfinished.sort_by_key(|l| l.time);
    lines.extend(unfinished);

    if let Some(since) = opts.since {
        lines.retain(|l| l.time.unix_nanos() >= i128::from(since));
    }
    if let Some(tail) = opts.tail_lines {
        lines.drain(..lines.len().saturating_sub(tail));
    }
    if let Some(limit) = opts.limit_bytes {
        let mut left = limit;
        let mut keep = 0;
        for line in &mut lines {
            if left == 0 {
                break;
            }
            let need = line.content.len() as u64 + 1;
            keep += 1;
            if need > left {
                line.content.truncate(left as usize);
                line.partial = true;
                break;
            }
            left -= need;
        }
        lines.truncate(keep);
    }
    Ok(lines)
}

/// The rotated files of `path` that exist, oldest (highest number) first.
fn rotated_files(path: &Path) -> Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_err(dir)(err)),
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut numbered = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let entry_name = entry.file_name();
        let Some(suffix) = entry_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if !suffix.is_empty() && suffix.bytes().all(|c| c.is_ascii_digit()) {
            if let Ok(n) = suffix.parse::<usize>() {
                numbered.push((n, path.with_file_name(&entry_name)));
            }
        }
    }
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    Ok(numbered.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    /// A clock that starts at `start` seconds and advances one second per record.
    fn ticking(start: i64) -> impl FnMut() -> Timestamp + Send + 'static {
        let next = Arc::new(AtomicI64::new(start));
        move || Timestamp {
            secs: next.fetch_add(1, Ordering::Relaxed),
            nanos: 5,
        }
    }

    fn writer(path: &Path, max_size: u64, max_files: usize) -> LogWriter {
        LogWriter::open(path, max_size, max_files)
            .unwrap()
            .with_clock(ticking(1_475_713_029))
    }

    fn contents(lines: &[LogLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8(l.content.clone()).unwrap())
            .collect()
    }

    #[test]
    fn timestamps_format_as_rfc3339_nano() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (1_475_713_029, 669_794_202, "2016-10-06T00:17:09.669794202Z"),
            (951_825_600, 1, "2000-02-29T12:00:00.000000001Z"),
            (-1, 999_999_999, "1969-12-31T23:59:59.999999999Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000000000Z"),
        ];
        for (secs, nanos, text) in cases {
            let ts = Timestamp { secs, nanos };
            assert_eq!(ts.to_string(), text);
            assert_eq!(Timestamp::parse(text), Some(ts), "{text}");
        }
    }

    #[test]
    fn dates_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn timestamps_parse_like_go_rfc3339nano() {
        let at = |s: &str| Timestamp::parse(s).map(|t| (t.secs, t.nanos));
        assert_eq!(at("2016-10-06T00:17:09Z"), Some((1_475_713_029, 0)));
        assert_eq!(
            at("2016-10-06T00:17:09.5Z"),
            Some((1_475_713_029, 500_000_000))
        );
        assert_eq!(
            at("2016-10-06T00:17:09.1234567891Z"),
            Some((1_475_713_029, 123_456_789))
        );
        assert_eq!(
            at("2016-10-06T02:17:09.5+02:00"),
            Some((1_475_713_029, 500_000_000))
        );
        assert_eq!(at("2016-10-05T23:47:09-00:30"), Some((1_475_713_029, 0)));
        for bad in [
            "",
            "2016-10-06",
            "2016-10-06T00:17:09",
            "2016-10-06T00:17:09.Z",
            "2016-13-06T00:17:09Z",
            "2015-02-29T00:17:09Z",
            "2016-10-06T24:00:00Z",
            "2016-10-06T00:17:09+0200",
            "2016-10-06 00:17:09Z",
            "2016-10-06T00:17:09Zjunk",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn writes_one_record_per_line_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr/0.log");
        let mut w = writer(&path, 0, 1);
        w.write(Stream::Stdout, b"hello\nwor").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"ld\n\n").unwrap();
        w.write(Stream::Stderr, b"no newline").unwrap();
        w.flush_partial(Stream::Stderr).unwrap();
        w.flush_partial(Stream::Stdout).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "2016-10-06T00:17:09.000000005Z stdout F hello\n\
             2016-10-06T00:17:10.000000005Z stderr F oops\n\
             2016-10-06T00:17:11.000000005Z stdout F world\n\
             2016-10-06T00:17:12.000000005Z stdout F \n\
             2016-10-06T00:17:13.000000005Z stderr P no newline\n"
        );
    }

    #[test]
    fn long_lines_split_into_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = writer(&path, 0, 1).with_max_line(4);
        w.write(Stream::Stdout, b"abcd\nabcdefghij\nxy").unwrap();
        w.write(Stream::Stdout, b"zabcdefg").unwrap();
        w.flush_partial(Stream::Stdout).unwrap();
        let records: Vec<String> = fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_owned())
            .collect();
        assert_eq!(
            records,
            [
                "stdout F abcd",
                "stdout P abcd",
                "stdout P efgh",
                "stdout F ij",
                "stdout P xyza",
                "stdout P bcde",
                "stdout P fg",
            ]
        );
        // Read back, the parts join into logical lines.
        let lines = read_logs(&path, &ReadOptions::default()).unwrap();
        assert_eq!(contents(&lines), ["abcd", "abcdefghij", "xyzabcdefg"]);
        assert_eq!(
            lines.iter().map(|l| l.partial).collect::<Vec<_>>(),
            [false, false, true]
        );
    }

    #[test]
    fn default_max_line_is_16_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = writer(&path, 0, 1);
        let mut big = vec![b'x'; DEFAULT_MAX_LINE * 2 + 1];
        big.push(b'\n');
        w.write(Stream::Stderr, &big).unwrap();
        let tags: Vec<_> = fs::read(&path)
            .unwrap()
            .split(|&c| c == b'\n')
            .filter(|r| !r.is_empty())
            .map(|r| parse_line(r).unwrap())
            .map(|l| (l.partial, l.content.len()))
            .collect();
        assert_eq!(
            tags,
            [
                (true, DEFAULT_MAX_LINE),
                (true, DEFAULT_MAX_LINE),
                (false, 1)
            ]
        );
    }

    #[test]
    fn rotates_by_size_keeping_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        // Each record is 40 bytes of header plus "line NN\n": 48 bytes; three fit in 160.
        let mut w = writer(&path, 160, 3);
        for i in 0..30 {
            w.write(Stream::Stdout, format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["0.log", "0.log.1", "0.log.2"]);
        for name in &names {
            let len = fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= 160, "{name} is {len} bytes");
        }
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
        let lines = read_logs(&path, &ReadOptions::default()).unwrap();
        let expected: Vec<String> = (21..30).map(|i| format!("line {i:02}")).collect();
        assert_eq!(contents(&lines), expected);
    }

    #[test]
    fn rotation_with_one_file_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = writer(&path, 100, 1);
        for i in 0..5 {
            w.write(Stream::Stdout, format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let lines = read_logs(&path, &ReadOptions::default()).unwrap();
        assert_eq!(contents(&lines), ["line 04"]);
    }

    #[test]
    fn reopening_appends_and_rotates_a_full_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        writer(&path, 100, 2)
            .write(Stream::Stdout, b"one\ntwo\n")
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
        // The file holds 88 bytes: the next record (46) does not fit and starts a new file.
        writer(&path, 100, 2)
            .write(Stream::Stdout, b"three\n")
            .unwrap();
        assert_eq!(
            fs::read_to_string(rotated(&path, 1))
                .unwrap()
                .lines()
                .count(),
            2
        );
        let lines = read_logs(&path, &ReadOptions::default()).unwrap();
        assert_eq!(contents(&lines), ["one", "two", "three"]);
        assert!(matches!(
            LogWriter::open(&path, 100, 0),
            Err(Error::NoFiles { .. })
        ));
    }

    #[test]
    fn partial_lines_join_across_rotation_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        fs::write(
            rotated(&path, 1),
            "2016-10-06T00:17:09Z stdout P hel\n\
             2016-10-06T00:17:10Z stderr F err\n",
        )
        .unwrap();
        fs::write(
            &path,
            "2016-10-06T00:17:11Z stdout P lo \n\
             garbage\n\
             2016-10-06T00:17:12Z stdout F:x world\n\
             2016-10-06T00:17:13Z stderr P tail\n\
             2016-10-06T00:17:14Z stdout F unfinish",
        )
        .unwrap();
        let lines = read_logs(&path, &ReadOptions::default()).unwrap();
        assert_eq!(contents(&lines), ["err", "hello world", "tail"]);
        assert_eq!(
            lines[1].time,
            Timestamp::parse("2016-10-06T00:17:09Z").unwrap()
        );
        assert_eq!(lines[1].stream, Stream::Stdout);
        assert_eq!(
            lines.iter().map(|l| l.partial).collect::<Vec<_>>(),
            [false, false, true]
        );
    }

    #[test]
    fn parses_records() {
        let line = parse_line(b"2016-10-06T00:17:09.669794202Z stdout F a b  c\n").unwrap();
        assert_eq!(
            line,
            LogLine {
                time: Timestamp {
                    secs: 1_475_713_029,
                    nanos: 669_794_202
                },
                stream: Stream::Stdout,
                partial: false,
                content: b"a b  c".to_vec(),
            }
        );
        let line = parse_line(b"2016-10-06T00:17:09Z stderr P").unwrap();
        assert!(line.partial && line.content.is_empty() && line.stream == Stream::Stderr);
        let reason = |l: &[u8]| match parse_line(l) {
            Err(Error::Parse { reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(b""), "bad timestamp");
        assert_eq!(reason(b"yesterday stdout F x"), "bad timestamp");
        assert_eq!(reason(b"2016-10-06T00:17:09Z"), "missing stream");
        assert_eq!(reason(b"2016-10-06T00:17:09Z stdin F x"), "unknown stream");
        assert_eq!(reason(b"2016-10-06T00:17:09Z stdout"), "missing tag");
        assert_eq!(reason(b"2016-10-06T00:17:09Z stdout X x"), "unknown tag");
    }

    #[test]
    fn tail_since_and_limit_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = writer(&path, 200, 5);
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        let read = |opts: ReadOptions| contents(&read_logs(&path, &opts).unwrap());
        assert_eq!(
            read(ReadOptions {
                tail_lines: Some(3),
                ..Default::default()
            }),
            ["line 17", "line 18", "line 19"]
        );
        assert!(read(ReadOptions {
            tail_lines: Some(0),
            ..Default::default()
        })
        .is_empty());
        // Line i was stamped 1_475_713_029 + i seconds (and 5 ns).
        let since = (1_475_713_029 + 15) * 1_000_000_000;
        assert_eq!(
            read(ReadOptions {
                since: Some(since),
                ..Default::default()
            }),
            ["line 15", "line 16", "line 17", "line 18", "line 19"]
        );
        assert_eq!(
            read(ReadOptions {
                since: Some(since + 6),
                tail_lines: Some(2),
                ..Default::default()
            }),
            ["line 18", "line 19"]
        );
        assert_eq!(
            read(ReadOptions {
                since: Some(since + 6),
                ..Default::default()
            })[0],
            "line 16"
        );
        let cut = read_logs(
            &path,
            &ReadOptions {
                tail_lines: Some(3),
                limit_bytes: Some(12),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(contents(&cut), ["line 17", "line"]);
        assert_eq!((cut[0].partial, cut[1].partial), (false, true));
        assert!(read(ReadOptions {
            limit_bytes: Some(0),
            ..Default::default()
        })
        .is_empty());
    }

    #[test]
    fn missing_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_logs(&dir.path().join("0.log"), &ReadOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(err.to_string().contains("0.log"), "{err}");
    }
}
