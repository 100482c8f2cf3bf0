//! Routes quiche's `log` records into GStreamer's debug log. On an element's networking
//! thread they go to that element's category, with the element as the object, so
//! `GST_DEBUG=quicnalusink:6` shows quiche's packets beside the sink's own messages; on
//! any other thread to the `quiche` category.

use gst::glib;
use gst::prelude::*;
use once_cell::sync::Lazy;
use std::cell::RefCell;

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "quiche",
        gst::DebugColorFlags::empty(),
        Some("quiche QUIC library (through quicnalu)"),
    )
});

/// Where a networking thread's quiche records go.
#[derive(Clone)]
pub struct Route {
    pub category: gst::DebugCategory,
    pub element: glib::WeakRef<gst::Element>,
}

thread_local! {
    static ROUTE: RefCell<Option<Route>> = const { RefCell::new(None) };
}

/// Sends this thread's quiche records to `route`; call first thing on a networking thread.
pub fn route(route: Route) {
    raise_max_level(route.category.threshold());
    ROUTE.with(|r| *r.borrow_mut() = Some(route));
}

struct GstLogger;

static LOGGER: GstLogger = GstLogger;

impl log::Log for GstLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let level = level(metadata.level());
        ROUTE.with(|r| match &*r.borrow() {
            Some(route) => route.category.above_threshold(level),
            None => CAT.above_threshold(level),
        })
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let file = glib::GString::from(record.file().unwrap_or("quiche"));
        let function = record.module_path().unwrap_or("quiche");
        let line = record.line().unwrap_or(0);
        let level = level(record.level());
        ROUTE.with(|r| match &*r.borrow() {
            Some(route) => route.category.log(
                route.element.upgrade().as_ref(),
                level,
                file.as_gstr(),
                function,
                line,
                *record.args(),
            ),
            None => CAT.log(
                None::<&glib::Object>,
                level,
                file.as_gstr(),
                function,
                line,
                *record.args(),
            ),
        });
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

/// `log` drops records above its max level before they cost anything: keep it at the most
/// verbose threshold asked of any category quiche logs to.
fn raise_max_level(threshold: gst::DebugLevel) {
    let wanted = match threshold {
        gst::DebugLevel::None => log::LevelFilter::Off,
        gst::DebugLevel::Error => log::LevelFilter::Error,
        gst::DebugLevel::Warning | gst::DebugLevel::Fixme => log::LevelFilter::Warn,
        gst::DebugLevel::Info => log::LevelFilter::Info,
        gst::DebugLevel::Debug => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    if wanted > log::max_level() {
        log::set_max_level(wanted);
    }
}

/// Installs the bridge unless the application already set a `log` logger (then quiche's
/// records go there, which is what that application asked for).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Off);
        raise_max_level(CAT.threshold());
    }
}
