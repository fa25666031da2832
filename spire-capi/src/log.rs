//! The log callback: the library's `tracing` events (model loads, memory plans, estimated
//! prompts, warnings) forwarded to the host's function.

use std::ffi::{c_char, c_void, CString};
use std::fmt::Write as _;
use std::sync::{OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Severity of a log message (`SPIRE_LOG_*`).
pub type spire_log_level = i32;
/// Errors.
pub const SPIRE_LOG_ERROR: spire_log_level = 1;
/// Warnings.
pub const SPIRE_LOG_WARN: spire_log_level = 2;
/// What the library does (model loads, memory plans, estimated prompts).
pub const SPIRE_LOG_INFO: spire_log_level = 3;
/// Details for debugging.
pub const SPIRE_LOG_DEBUG: spire_log_level = 4;
/// Everything.
pub const SPIRE_LOG_TRACE: spire_log_level = 5;

/// A log function: `level`, the message (UTF-8, valid during the call only) and the
/// `user_data` given to `spire_set_log_callback`. Called on the
/// thread that logs, so it must be thread-safe; it must not throw or unwind.
pub type spire_log_fn =
    Option<unsafe extern "C" fn(level: spire_log_level, message: *const c_char, user_data: *mut c_void)>;

/// The installed callback, its user data (as an address) and the most verbose level it takes.
type Sink = (
    unsafe extern "C" fn(spire_log_level, *const c_char, *mut c_void),
    usize,
    spire_log_level,
);

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
static INSTALLED: OnceLock<bool> = OnceLock::new();

fn level_of(l: &Level) -> spire_log_level {
    match *l {
        Level::ERROR => SPIRE_LOG_ERROR,
        Level::WARN => SPIRE_LOG_WARN,
        Level::INFO => SPIRE_LOG_INFO,
        Level::DEBUG => SPIRE_LOG_DEBUG,
        Level::TRACE => SPIRE_LOG_TRACE,
    }
}

/// The subscriber, installed once for the process; it reads [`SINK`] on every event.
struct CLog;

/// The event's message, then its other fields as ` name=value`.
struct Text(String);

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for CLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level may change with each `spire_set_log_callback`: ask every time.
        Interest::sometimes()
    }

    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.is_event()
            && SINK
                .read()
                .ok()
                .and_then(|s| *s)
                .is_some_and(|(_, _, max)| level_of(m.level()) <= max)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Some((cb, user, max)) = SINK.read().ok().and_then(|s| *s) else {
            return;
        };
        let level = level_of(event.metadata().level());
        if level > max {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let msg = CString::new(text.0.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the host's function, with a NUL-terminated string valid during the call.
        unsafe { cb(level, msg.as_ptr(), user as *mut c_void) };
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Installs (or, with `None`, removes) the sink; installs the subscriber on first use.
/// `false` when another `tracing` subscriber already owns the process.
pub(crate) fn set(sink: Option<Sink>) -> bool {
    if let Ok(mut s) = SINK.write() {
        *s = sink;
    }
    *INSTALLED.get_or_init(|| tracing::subscriber::set_global_default(CLog).is_ok())
}
