//! Routes quiche's `log` records into the `quiche` GStreamer debug category, so
//! `GST_DEBUG=quiche:6` shows them alongside the elements' own logs.

use gst::glib;
use gst::prelude::*;
use once_cell::sync::Lazy;

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "quiche",
        gst::DebugColorFlags::empty(),
        Some("quiche QUIC library (through quicnalu)"),
    )
});

struct GstLogger;

static LOGGER: GstLogger = GstLogger;

impl log::Log for GstLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        CAT.above_threshold(level(metadata.level()))
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let file = glib::GString::from(record.file().unwrap_or("quiche"));
            CAT.log(
                None::<&glib::Object>,
                level(record.level()),
                file.as_gstr(),
                record.module_path().unwrap_or("quiche"),
                record.line().unwrap_or(0),
                *record.args(),
            );
        }
    }

    fn flush(&self) {}
}

fn level(l: log::Level) -> gst::DebugLevel {
    match l {
        log::Level::Error => gst::DebugLevel::Error,
        log::Level::Warn => gst::DebugLevel::Warning,
        log::Level::Info => gst::DebugLevel::Info,
        log::Level::Debug => gst::DebugLevel::Debug,
        log::Level::Trace => gst::DebugLevel::Trace,
    }
}

/// Installs the bridge unless the application already set a `log` logger (then quiche's
/// records go there, which is what that application asked for).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        let max = match CAT.threshold() {
            gst::DebugLevel::None => log::LevelFilter::Off,
            gst::DebugLevel::Error => log::LevelFilter::Error,
            gst::DebugLevel::Warning | gst::DebugLevel::Fixme => log::LevelFilter::Warn,
            gst::DebugLevel::Info => log::LevelFilter::Info,
            gst::DebugLevel::Debug => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        };
        log::set_max_level(max);
    }
}
