//! The `log` crate's records into GStreamer's debug log: ours (everything below the element
//! layer logs through `log`) and quiche's. On an element's networking thread each goes with
//! that element as its object: quiche's to the element's own category, so
//! `GST_DEBUG=quicnalusink:6` shows quiche's packets beside the sink's own messages, and
//! ours to `quicnalu-server` (the sender's side), `quicnalu-client` (the receiver's) or
//! `quicnalu-moq`, else to the element's. Off those threads: `quiche`, or `quicnalu`.

use crate::net::link::Enter;
use gst::glib;
use gst::prelude::*;
use once_cell::sync::Lazy;
use std::cell::RefCell;
use std::sync::Arc;

fn category(name: &str, description: &str) -> gst::DebugCategory {
    gst::DebugCategory::new(name, gst::DebugColorFlags::empty(), Some(description))
}

static QUICHE: Lazy<gst::DebugCategory> =
    Lazy::new(|| category("quiche", "quiche QUIC library (through quicnalu)"));
static OURS: Lazy<gst::DebugCategory> = Lazy::new(|| category("quicnalu", "quicnalu"));
static SERVER: Lazy<gst::DebugCategory> =
    Lazy::new(|| category("quicnalu-server", "quicnalusink networking thread"));
static CLIENT: Lazy<gst::DebugCategory> =
    Lazy::new(|| category("quicnalu-client", "quicnalusrc networking thread"));
static MOQ: Lazy<gst::DebugCategory> =
    Lazy::new(|| category("quicnalu-moq", "Media over QUIC sessions with a relay"));

/// Where a networking thread's records go.
#[derive(Clone)]
struct Route {
    category: gst::DebugCategory,
    element: glib::WeakRef<gst::Element>,
}

thread_local! {
    static ROUTE: RefCell<Option<Route>> = const { RefCell::new(None) };
}

/// What `element` runs first on each networking thread it starts: that thread's records go
/// with `element`, quiche's to `category`.
pub fn enter(element: &gst::Element, category: gst::DebugCategory) -> Enter {
    let element = element.downgrade();
    Arc::new(move || {
        for c in [category, *SERVER, *CLIENT, *MOQ] {
            raise_max_level(c.threshold());
        }
        let route = Route {
            category,
            element: element.clone(),
        };
        ROUTE.with(|r| *r.borrow_mut() = Some(route));
    })
}

/// The category for a record of ours by the module it comes from; None: quiche's, or ours
/// without a side of its own.
fn side(target: &str) -> Option<gst::DebugCategory> {
    let module = target.strip_prefix("gstquicnalu::")?;
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| module.starts_with(p));
    if starts(&["net::moq"]) {
        Some(*MOQ)
    } else if starts(&[
        "sender",
        "net::server",
        "net::entry",
        "net::conn",
        "policy::gate",
    ]) {
        Some(*SERVER)
    } else if starts(&[
        "receiver",
        "net::client",
        "policy::reconnect",
        "policy::knock",
    ]) {
        Some(*CLIENT)
    } else {
        None
    }
}

/// Where a record with `target` goes, and the element it is about.
fn destination(target: &str) -> (gst::DebugCategory, Option<gst::Element>) {
    let ours = target.starts_with("gstquicnalu");
    ROUTE.with(|r| match &*r.borrow() {
        Some(route) => (
            side(target).unwrap_or(route.category),
            route.element.upgrade(),
        ),
        None if ours => (side(target).unwrap_or(*OURS), None),
        None => (*QUICHE, None),
    })
}

struct GstLogger;

static LOGGER: GstLogger = GstLogger;

impl log::Log for GstLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        destination(metadata.target())
            .0
            .above_threshold(level(metadata.level()))
    }

    fn log(&self, record: &log::Record) {
        let (category, element) = destination(record.target());
        let level = level(record.level());
        if !category.above_threshold(level) {
            return;
        }
        let file = glib::GString::from(record.file().unwrap_or("quiche"));
        category.log(
            element.as_ref(),
            level,
            file.as_gstr(),
            record.module_path().unwrap_or("quiche"),
            record.line().unwrap_or(0),
            *record.args(),
        );
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
/// verbose threshold asked of any category records go to.
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

/// Installs the bridge unless the application already set a `log` logger (then the records
/// go there, which is what that application asked for).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Off);
        for c in [*QUICHE, *OURS, *SERVER, *CLIENT, *MOQ] {
            raise_max_level(c.threshold());
        }
    }
}
