//! Where the log goes: standard error, written the way nginx writes its access log with
//! `buffer=64k flush=1s`.
//!
//! A log line is appended to an in-memory buffer under an uncontended lock: no system call, no
//! thread woken. The buffer is written out when it holds [`BUFFER_BYTES`], by a thread that wakes
//! every [`FLUSH_INTERVAL`], and when the guard [`init`] returns is dropped at exit (after a
//! graceful shutdown, so the last requests' lines are kept). A warning or an error is written at
//! once, with whatever is buffered before it, so an operator sees trouble when it happens and in
//! order. On a terminal every line is written at once.
//!
//! The cost of this design: a crash (not a SIGTERM) loses up to a second of request lines, as
//! nginx's buffered access log does. tracing-appender's non-blocking writer, used before, handed
//! every line to a writer thread: one `write` per line plus the wake-ups and spinning of its
//! channel (measured: about 0.9 `write`, 0.7 `sched_yield` and 0.2 `futex` per gateway request,
//! `strace -c -f`).

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use keygate::config::LogFormat;

/// Buffered bytes that are written out at once.
pub const BUFFER_BYTES: usize = 64 * 1024;
/// The longest a buffered line waits.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The buffer and where it goes.
struct Shared<W: Write> {
    state: Mutex<(Vec<u8>, W)>,
    /// Every line at once (standard error is a terminal).
    immediate: bool,
}

impl<W: Write> Shared<W> {
    fn append(&self, bytes: &[u8], urgent: bool) {
        let Ok(mut state) = self.state.lock() else { return };
        let (buffer, out) = &mut *state;
        buffer.extend_from_slice(bytes);
        if urgent || self.immediate || buffer.len() >= BUFFER_BYTES {
            write_out(buffer, out);
        }
    }

    fn flush(&self) {
        if let Ok(mut state) = self.state.lock() {
            let (buffer, out) = &mut *state;
            write_out(buffer, out);
        }
    }
}

/// Writes and empties `buffer`. A failed write loses those lines: there is nowhere to report it.
fn write_out<W: Write>(buffer: &mut Vec<u8>, out: &mut W) {
    if !buffer.is_empty() {
        let _ = out.write_all(buffer);
        let _ = out.flush();
        buffer.clear();
    }
}

/// The `MakeWriter` of the log: each event's formatted line goes to the shared buffer.
pub struct BufferedWriter<W: Write> {
    shared: Arc<Shared<W>>,
}

impl<W: Write> Clone for BufferedWriter<W> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<W: Write + Send + 'static> BufferedWriter<W> {
    /// A writer buffering for `out`, or writing every line at once when `immediate`.
    pub fn new(out: W, immediate: bool) -> Self {
        Self { shared: Arc::new(Shared { state: Mutex::new((Vec::with_capacity(BUFFER_BYTES), out)), immediate }) }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        self.shared.flush();
    }
}

/// One event's writer: `urgent` for a warning or an error.
pub struct Line<'a, W: Write> {
    shared: &'a Shared<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.shared.append(bytes, self.urgent);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BufferedWriter<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { shared: &self.shared, urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        // tracing orders levels by verbosity: WARN and ERROR are the ones at or below WARN.
        Line { shared: &self.shared, urgent: *meta.level() <= Level::WARN }
    }
}

/// Writes out what is buffered when dropped (at exit).
pub struct LogGuard(BufferedWriter<io::Stderr>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info,sqlx=warn`), `format`, the
/// buffered standard error. Keep the guard until the end of `main`.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = BufferedWriter::new(io::stderr(), terminal);
    if !terminal {
        let flusher = writer.clone();
        // Sleeps between flushes; ends with the process.
        let _ = std::thread::Builder::new().name("keygate-log-flush".into()).spawn(move || {
            loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flusher.flush();
            }
        });
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer.clone()).with_ansi(terminal);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.event_format(TextLine::default()).init(),
    }
    LogGuard(writer)
}

/// The target of the one log line per request (`keygate_http::context`).
const REQUEST_TARGET: &str = "keygate::request";

/// tracing's text format (`Format<Full>`), with the request line written directly: byte for byte
/// what `Full` writes without colours (timestamp, level, target, the fields as `DefaultFields`
/// writes them), at a fraction of its cost — no styles painted with nothing, the second's
/// timestamp text kept per thread, integers and ids without the formatting machinery. Any other
/// event, an event inside a span, and colours (a terminal) go to `Full` itself.
#[derive(Default)]
pub struct TextLine {
    full: tracing_subscriber::fmt::format::Format,
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        if writer.has_ansi_escapes() || meta.target() != REQUEST_TARGET || ctx.event_scope().is_some() {
            return self.full.format_event(ctx, writer, event);
        }
        // The line is put together in a `String` of this thread's and handed on in one write:
        // each piece written to `writer` directly is a call through `dyn fmt::Write`. A line
        // written while another is being put together on this thread (a field's `Display` that
        // logs), or while the thread ends, gets a `String` of its own.
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let own = |writer: &mut Writer<'_>| {
            let mut line = String::new();
            request_line(&mut line, *meta.level(), event)?;
            writer.write_str(&line)
        };
        LINE.try_with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                request_line(&mut line, *meta.level(), event)?;
                writer.write_str(&line)?;
                // A rare long line (an event with many fields) is not held for the thread's life.
                if line.capacity() > 4096 {
                    *line = String::new();
                }
                Ok(())
            }
            Err(_) => own(&mut writer),
        })
        // The thread's String is gone (the thread is ending): a String of its own.
        .unwrap_or_else(|_| own(&mut writer))
    }
}

/// A request line as `Full` writes it, newline included, appended to `line`.
fn request_line(line: &mut String, level: Level, event: &Event<'_>) -> fmt::Result {
    write_timestamp(line)?;
    // `Full` pads the level to five characters and follows it, and the target, with a space.
    let level = match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    };
    for part in [" ", level, " ", REQUEST_TARGET, ": "] {
        line.push_str(part);
    }
    let mut fields = LineFields { writer: line, empty: true, result: Ok(()) };
    event.record(&mut fields);
    fields.result?;
    line.push('\n');
    Ok(())
}

/// `2026-12-01T10:21:57.400204Z`, as tracing's `SystemTime` writes it. The text up to the
/// seconds changes once a second: each thread keeps the last one.
fn write_timestamp(writer: &mut impl fmt::Write) -> fmt::Result {
    thread_local! {
        static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Utc::now();
    let second = now.timestamp();
    let micros = now.timestamp_subsec_micros().min(999_999);
    SECOND.with_borrow_mut(|(at, text)| {
        if *at != second {
            text.clear();
            write!(text, "{}", now.format("%Y-%m-%dT%H:%M:%S"))?;
            *at = second;
        }
        writer.write_str(text)
    })?;
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros);
    writer.write_char('.')?;
    writer.write_str(&"000000"[digits.len()..])?;
    writer.write_str(digits)?;
    writer.write_char('Z')
}

/// The fields of a request line as `DefaultFields` writes them: `message` bare (control
/// characters escaped as tracing escapes them), then `name=value` separated by spaces, a
/// string's value quoted and escaped (`Debug`), anything else by its `Debug` (a `%` value's
/// `Display`).
struct LineFields<'w, W> {
    writer: &'w mut W,
    empty: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> LineFields<'_, W> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.empty) {
            self.writer.write_char(' ')?;
        }
        let name = field.name();
        self.writer.write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }

    /// The message, bare, its terminal characters escaped, unless an earlier field failed.
    fn message(&mut self, text: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            if !std::mem::take(&mut self.empty) {
                self.result = self.writer.write_char(' ');
            }
            self.result = self.result.and_then(|()| Escaped(&mut *self.writer).write_fmt(text));
        }
    }

    /// `name=` and the value `write` writes, unless an earlier field failed.
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| write(self.writer));
        }
    }
}

impl<W: fmt::Write> Visit for LineFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message(format_args!("{value}"));
        } else if value.bytes().all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\') {
            // What `Debug` writes of a string with nothing to escape (an outcome code), without
            // the formatting machinery.
            self.field(field, |w| {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| write_f64(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message(format_args!("{value:?}"));
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }
}

/// A writer that passes text on with the characters `DefaultFields` escapes in a message (the
/// terminal's: ESC, BEL, BS, FF, DEL, C1) escaped as it escapes them. Line breaks pass, as they
/// do through tracing: a request line's message is the fixed word `request`, and what a client
/// sends reaches the line only through fields (`Masked` in keygate-http escapes those).
struct Escaped<'w, W>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) =
            rest.find(|c: char| matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'))
        {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            if c.is_ascii() {
                write!(self.0, "\\x{:02x}", c as u32)?;
            } else {
                write!(self.0, "\\u{{{:x}}}", c as u32)?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// `value` as `Debug` writes an `f64` (the shortest text that reads back as it). A request's
/// `latency_ms` is whole microseconds, so thousandths: those are written with integer arithmetic
/// (the shortest text of the double nearest `n / 1000` is `n / 1000`'s decimals, trailing zeros
/// dropped, at least one kept); anything else goes to `Debug`.
fn write_f64(w: &mut impl fmt::Write, value: f64) -> fmt::Result {
    let thousandths = (value * 1000.0).round();
    if !(1.0..1e15).contains(&thousandths) || thousandths / 1000.0 != value {
        return write!(w, "{value:?}");
    }
    // In range and whole: exact as an integer.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let thousandths = thousandths as u64;
    let mut digits = itoa::Buffer::new();
    w.write_str(digits.format(thousandths / 1000))?;
    w.write_char('.')?;
    let fraction = thousandths % 1000;
    let text = digits.format(fraction + 1000);
    // "1050" → "05": the three decimals, trailing zeros dropped, at least one kept.
    let decimals = text[1..].trim_end_matches('0');
    w.write_str(if decimals.is_empty() { "0" } else { decimals })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that counts its writes (each would be a system call).
    #[derive(Clone, Default)]
    struct Counting(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Counting {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
            inner.0.extend_from_slice(bytes);
            inner.1 += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Counting {
        fn seen(&self) -> (String, usize) {
            let inner = self.0.lock().expect("not poisoned");
            (String::from_utf8_lossy(&inner.0).into_owned(), inner.1)
        }
    }

    fn line(writer: &BufferedWriter<Counting>, urgent: bool, text: &str) {
        let mut line = Line { shared: &writer.shared, urgent };
        line.write_all(text.as_bytes()).expect("append");
    }

    #[test]
    fn lines_wait_in_the_buffer_until_a_flush() {
        let out = Counting::default();
        let writer = BufferedWriter::new(out.clone(), false);
        line(&writer, false, "one\n");
        line(&writer, false, "two\n");
        assert_eq!(out.seen(), (String::new(), 0), "nothing written yet");
        writer.flush();
        assert_eq!(out.seen(), ("one\ntwo\n".to_owned(), 1), "both lines in one write");
        writer.flush();
        assert_eq!(out.seen().1, 1, "an empty buffer writes nothing");
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let out = Counting::default();
        let writer = BufferedWriter::new(out.clone(), false);
        let text = "x".repeat(1000) + "\n";
        let lines = BUFFER_BYTES / text.len() + 1;
        for _ in 0..lines {
            line(&writer, false, &text);
        }
        let (written, writes) = out.seen();
        assert_eq!((written.len(), writes), (lines * text.len(), 1), "one write of everything so far");
    }

    #[test]
    fn a_warning_goes_out_at_once_after_what_came_before() {
        let out = Counting::default();
        let writer = BufferedWriter::new(out.clone(), false);
        line(&writer, false, "request\n");
        line(&writer, true, "WARN store down\n");
        assert_eq!(out.seen(), ("request\nWARN store down\n".to_owned(), 1));
    }

    #[test]
    fn on_a_terminal_every_line_goes_out_at_once() {
        let out = Counting::default();
        let writer = BufferedWriter::new(out.clone(), true);
        line(&writer, false, "one\n");
        assert_eq!(out.seen(), ("one\n".to_owned(), 1));
    }

    /// What a subscriber with `format` writes for `emit`, line by line.
    fn lines_of<F>(format: F, emit: impl Fn()) -> Vec<String>
    where
        F: FormatEvent<tracing_subscriber::Registry, tracing_subscriber::fmt::format::DefaultFields>
            + Send
            + Sync
            + 'static,
    {
        let out = Counting::default();
        let sink = out.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || sink.clone()).with_ansi(false).event_format(format).finish();
        tracing::subscriber::with_default(subscriber, emit);
        out.seen().0.lines().map(str::to_owned).collect()
    }

    fn request_lines() {
        let account: keygate_domain::AccountId = "acct_01M8RJ056NZDSVQNHHB4VG82D9".parse().expect("an id");
        let ip: std::net::IpAddr = "203.0.113.9".parse().expect("an address");
        let none: Option<tracing::field::DisplayValue<keygate_domain::KeyId>> = None;
        tracing::info!(
            target: "keygate::request",
            request_id = %"req_01M8RJ06PMQFDWV8FEXD4940EV", method = %"GET", path = %"/v1/calls", status = 200u16,
            outcome = "ok", account_id = Some(tracing::field::display(account)), key_id = none,
            client_ip = Some(tracing::field::display(ip)), latency_ms = 66.286, "request"
        );
        tracing::warn!(target: "keygate::request", status = -1i64, outcome = "a \"quoted\"\nline", r#type = 7u64, "request");
        tracing::info!(target: "keygate::request", latency_ms = 0.1, "re\x1bqu\u{85}est {}", "\x07");
        tracing::info!(target: "keygate::request", debugged = ?vec!["a"], flag = true);
        tracing::info!(
            target: "keygate::request",
            zero = 0.0, one = 1.0, tenth = 0.1, sum = 0.1 + 0.2, small = 1e-7, negative = -2.5, big = 123_456.789,
            huge = 1e300, nan = f64::NAN, quote = "it's", accent = "é", tab = "a\tb", slash = "a\\b", "fields"
        );
        tracing::info!(target: "keygate::request", "{}", "a message\u{9b} with \x1b[31m sequences \x7f");
        tracing::info!(target: "keygate::other", path = %"/v1/x", "not a request line");
        tracing::info_span!("outer", id = 3).in_scope(|| tracing::info!(target: "keygate::request", "in a span"));
    }

    #[test]
    fn the_request_line_is_byte_for_byte_what_tracing_writes() {
        let ours = lines_of(TextLine::default(), request_lines);
        let theirs = lines_of(tracing_subscriber::fmt::format::Format::default(), request_lines);
        assert_eq!(ours.len(), 8, "{ours:#?}");
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            // The timestamps differ by when each ran; everything after them is the same.
            let (our_time, our_rest) = ours.split_at(27);
            assert_eq!(our_rest, &theirs[27..], "{ours}\n{theirs}");
            let time = chrono::DateTime::parse_from_rfc3339(our_time).expect("an RFC 3339 timestamp");
            assert!(our_time.ends_with('Z') && our_time.as_bytes()[19] == b'.', "{our_time}");
            assert!((chrono::Utc::now() - time.to_utc()).num_seconds().abs() < 60, "{our_time}");
        }
        assert!(ours[0].ends_with(
            " INFO keygate::request: request request_id=req_01M8RJ06PMQFDWV8FEXD4940EV method=GET \
             path=/v1/calls status=200 outcome=\"ok\" account_id=acct_01M8RJ056NZDSVQNHHB4VG82D9 \
             client_ip=203.0.113.9 latency_ms=66.286"
        ));
    }

    #[test]
    fn numbers_are_written_as_debug_writes_them() {
        let mut values: Vec<f64> = (0..200_000).map(|n| f64::from(n) / 1000.0).collect();
        values.extend([1e-7, 0.0001, 0.1 + 0.2, -0.001, -2.5, 1e11 + 0.001, 999_999_999_999.999, 1e12, 1e15, 1e16]);
        values.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, f64::MAX, -0.0]);
        for value in values {
            let mut ours = String::new();
            write_f64(&mut ours, value).expect("written");
            assert_eq!(ours, format!("{value:?}"));
        }
    }

    #[test]
    fn a_timestamp_has_six_digits_of_microseconds() {
        let mut text = String::new();
        write_timestamp(&mut text).expect("written");
        assert_eq!(text.len(), 27, "{text}");
        assert!(chrono::DateTime::parse_from_rfc3339(&text).is_ok(), "{text}");
    }
}
