//! Log setup: env_logger in one of two formats, to stderr or appended to a file.
//!
//! - **text**: `<UTC timestamp> <LEVEL> <target>: <message> key=value …`
//! - **json**: one object per line, `{"ts":…,"level":…,"target":…,"msg":…}` plus every
//!   structured field of the record (`log::info!(request_id = id; "…")`) as a top-level member:
//!   integers as JSON numbers, everything else as strings.
//!
//! With `--log.file` the log is appended to that file (created with mode 0600, never truncated);
//! [`reopen`] (SIGHUP) opens the path again, so logrotate's "move, then HUP" works.
//!
//! Third-party crates (the HTTP client, TLS) are held at `warn` whatever the chosen level: their
//! debug output describes requests in detail, and no secret may reach a log at any level.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use log::LevelFilter;
use log::kv::{self, Key, Source, Value, VisitSource, VisitValue};

use crate::config::{LogConfig, LogFormat};

/// The log file shared by the logger and [`reopen`]; unset when logging to stderr.
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// Installs the logger; a second call (tests) is ignored. A log file that cannot be opened is
/// reported on stderr, naming `LOG_FILE`, and the log goes to stderr instead.
pub fn init(cfg: &LogConfig) {
    let level = cfg.level;
    let third_party = level.min(LevelFilter::Warn);
    let format = cfg.format;
    let target = match &cfg.file {
        None => env_logger::Target::Stderr,
        Some(path) => match LogFile::open(path) {
            Ok(file) => {
                let file = Arc::new(file);
                if LOG_FILE.set(Arc::clone(&file)).is_err() {
                    // A logger is already installed (tests); this one would be ignored anyway.
                    return;
                }
                env_logger::Target::Pipe(Box::new(FileWriter(file)))
            }
            Err(e) => {
                eprintln!(
                    "mcp-tunnel: cannot open the log file {} (LOG_FILE, --log.file): {e}; \
                     logging to stderr",
                    path.display()
                );
                env_logger::Target::Stderr
            }
        },
    };
    let _ = env_logger::Builder::new()
        .filter_level(third_party)
        .filter_module("mcp_tunnel", level)
        .format(move |out, record| write_record(out, format, SystemTime::now(), record))
        .target(target)
        .try_init();
}

/// Reopens the log file after logrotate moved it (SIGHUP). No-op when logging to stderr. If the
/// path cannot be opened, logging goes on into the old file and stderr says so once.
pub fn reopen() {
    if let Some(file) = LOG_FILE.get() {
        file.reopen();
    }
}

/// An append-only log file that can be reopened at its path.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
    /// Set after a failed reopen was reported, so a lasting problem is reported once.
    reopen_failed: AtomicBool,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
            reopen_failed: AtomicBool::new(false),
        })
    }

    fn reopen(&self) {
        match open_append(&self.path) {
            Ok(fresh) => {
                *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                self.reopen_failed.store(false, Ordering::Relaxed);
                // The first line of the new file says where it came from.
                log::info!("log file {} reopened", self.path.display());
            }
            Err(e) => {
                if !self.reopen_failed.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "mcp-tunnel: cannot reopen the log file {} (LOG_FILE, --log.file): {e}; \
                         still writing to the file opened before",
                        self.path.display()
                    );
                }
            }
        }
    }

    /// Writes one whole record with one `write_all`, under the lock.
    fn write_record(&self, buf: &[u8]) -> io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(buf)
    }
}

/// Opens `path` for appending, creating it readable by its owner only (logs describe traffic).
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The writer env_logger is given: every record goes to the current [`LogFile`] handle.
struct FileWriter(Arc<LogFile>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_record(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_record(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // a File is unbuffered
    }
}

/// Formats one record as one line in `format`.
fn write_record(
    out: &mut dyn Write,
    format: LogFormat,
    now: SystemTime,
    record: &log::Record<'_>,
) -> io::Result<()> {
    let line = match format {
        LogFormat::Text => text_line(now, record),
        LogFormat::Json => json_line(now, record),
    };
    out.write_all(line.as_bytes())
}

/// `<ts> <LEVEL> <target>: <message> key=value …` and a newline.
fn text_line(now: SystemTime, record: &log::Record<'_>) -> String {
    let mut line = format!(
        "{} {:<5} {}: {}",
        utc_timestamp(now),
        record.level(),
        record.target(),
        record.args()
    );
    for (key, value) in fields(record.key_values()) {
        let text = match value {
            Field::Int(n) => n,
            Field::Text(s) if needs_quotes(&s) => format!("{s:?}"),
            Field::Text(s) => s,
        };
        let _ = write!(line, " {key}={text}");
    }
    line.push('\n');
    line
}

/// A value that would not read back as one `key=value` word is quoted.
fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '='))
}

/// The members every JSON line has; a structured field with one of these names is written as
/// `kv.<name>` so that no member appears twice.
const RESERVED: [&str; 4] = ["ts", "level", "target", "msg"];

/// One JSON object and a newline.
fn json_line(now: SystemTime, record: &log::Record<'_>) -> String {
    let mut line = format!(
        "{{\"ts\":{},\"level\":{},\"target\":{},\"msg\":{}",
        json_string(&utc_timestamp(now)),
        json_string(record.level().as_str()),
        json_string(record.target()),
        json_string(&record.args().to_string()),
    );
    for (key, value) in fields(record.key_values()) {
        let key = if RESERVED.contains(&key.as_str()) {
            format!("kv.{key}")
        } else {
            key
        };
        let value = match value {
            Field::Int(n) => n,
            Field::Text(s) => json_string(&s),
        };
        let _ = write!(line, ",{}:{value}", json_string(&key));
    }
    line.push_str("}\n");
    line
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// A structured field's value: an integer (already as its decimal text) or anything else as text.
enum Field {
    Int(String),
    Text(String),
}

/// The record's key-value pairs in order.
fn fields(source: &dyn Source) -> Vec<(String, Field)> {
    struct Collect(Vec<(String, Field)>);
    impl<'kvs> VisitSource<'kvs> for Collect {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
            self.0.push((key.as_str().to_string(), field(&value)));
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = source.visit(&mut collect);
    collect.0
}

fn field(value: &Value<'_>) -> Field {
    struct Classify(Option<String>);
    impl<'v> VisitValue<'v> for Classify {
        fn visit_any(&mut self, _: Value<'_>) -> Result<(), kv::Error> {
            Ok(())
        }
        fn visit_u64(&mut self, n: u64) -> Result<(), kv::Error> {
            self.0 = Some(n.to_string());
            Ok(())
        }
        fn visit_i64(&mut self, n: i64) -> Result<(), kv::Error> {
            self.0 = Some(n.to_string());
            Ok(())
        }
        fn visit_u128(&mut self, n: u128) -> Result<(), kv::Error> {
            self.0 = Some(n.to_string());
            Ok(())
        }
        fn visit_i128(&mut self, n: i128) -> Result<(), kv::Error> {
            self.0 = Some(n.to_string());
            Ok(())
        }
    }
    let mut classify = Classify(None);
    let _ = value.visit(&mut classify);
    match classify.0 {
        Some(n) => Field::Int(n),
        None => Field::Text(value.to_string()),
    }
}

/// `2026-11-26T04:45:06.123Z`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`, which is exact for every date we will ever print.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_668_306_123);
        assert_eq!(utc_timestamp(t), "2026-11-26T04:45:06.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    /// Formats one record carrying `kvs` in `format`.
    fn render(format: LogFormat, message: std::fmt::Arguments<'_>, kvs: &dyn Source) -> String {
        let record = log::Record::builder()
            .level(log::Level::Debug)
            .target("mcp_tunnel::dispatch")
            .args(message)
            .key_values(kvs)
            .build();
        let mut out = Vec::new();
        let at = UNIX_EPOCH + Duration::from_millis(1_795_668_306_123);
        write_record(&mut out, format, at, &record).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_parse_and_carry_the_structured_fields() {
        let kvs: [(&str, Value<'_>); 5] = [
            ("request_id", Value::from("req-\"1\"\n")),
            ("channel", Value::from("main")),
            ("status", Value::from(200u16)),
            ("duration_ms", Value::from(12u128)),
            ("msg", Value::from("clash")),
        ];
        let line = render(
            LogFormat::Json,
            format_args!("command \"x\"\nanswered"),
            &kvs,
        );
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2026-11-26T04:45:06.123Z");
        assert_eq!(v["level"], "DEBUG");
        assert_eq!(v["target"], "mcp_tunnel::dispatch");
        assert_eq!(v["msg"], "command \"x\"\nanswered");
        assert_eq!(v["request_id"], "req-\"1\"\n");
        assert_eq!(v["channel"], "main");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 12);
        assert_eq!(v["kv.msg"], "clash");
        assert_eq!(v.as_object().unwrap().len(), 9);

        let negative: [(&str, Value<'_>); 2] =
            [("delta", Value::from(-3i32)), ("ok", Value::from(true))];
        let v: serde_json::Value =
            serde_json::from_str(&render(LogFormat::Json, format_args!("m"), &negative)).unwrap();
        assert_eq!(v["delta"], -3);
        assert_eq!(v["ok"], "true");
    }

    #[test]
    fn text_lines_append_key_value_pairs() {
        let kvs: [(&str, Value<'_>); 3] = [
            ("request_id", Value::from("req-1")),
            ("status", Value::from(200u16)),
            ("note", Value::from("two words")),
        ];
        let line = render(LogFormat::Text, format_args!("answered"), &kvs);
        assert_eq!(
            line,
            "2026-11-26T04:45:06.123Z DEBUG mcp_tunnel::dispatch: answered \
             request_id=req-1 status=200 note=\"two words\"\n"
        );
        let none: [(&str, &str); 0] = [];
        let plain = render(LogFormat::Text, format_args!("plain"), &none);
        assert_eq!(
            plain,
            "2026-11-26T04:45:06.123Z DEBUG mcp_tunnel::dispatch: plain\n"
        );
    }

    /// A fresh directory for one test.
    fn temp_dir(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mcp-tunnel-logging-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_file_is_private_and_appended_to() {
        let dir = temp_dir("append");
        let path = dir.join("tunnel.log");
        let file = Arc::new(LogFile::open(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut writer = FileWriter(Arc::clone(&file));
        writer.write_all(b"one\n").unwrap();
        drop(writer);
        drop(file);
        // Opened again (a restart): the earlier lines stay.
        let file = Arc::new(LogFile::open(&path).unwrap());
        FileWriter(file).write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopen_after_a_rename_writes_a_new_file_at_the_path() {
        let dir = temp_dir("reopen");
        let path = dir.join("tunnel.log");
        let rotated = dir.join("tunnel.log.1");
        let file = Arc::new(LogFile::open(&path).unwrap());
        let mut writer = FileWriter(Arc::clone(&file));
        writer.write_all(b"before\n").unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        writer.write_all(b"moved\n").unwrap(); // still the old handle, as logrotate expects
        file.reopen();
        writer.write_all(b"after\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            "before\nmoved\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A path that cannot be opened any more: the old handle keeps the log going.
        std::fs::remove_dir_all(&dir).unwrap();
        file.reopen();
        assert!(file.reopen_failed.load(Ordering::Relaxed));
        writer.write_all(b"still\n").unwrap();
    }
}
