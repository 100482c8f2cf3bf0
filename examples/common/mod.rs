//! What the examples share: flag parsing in the style of the original C demo, and running a
//! pipeline to its end.
#![allow(dead_code)] // each example uses its own subset

use gst::prelude::*;
use std::collections::HashMap;

/// Parses `-x VALUE` pairs and bare `--flag`s; exits with `usage` on anything else.
pub fn parse_flags(usage: &str, with_value: &[&str], bare: &[&str]) -> HashMap<String, String> {
    let mut flags = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{usage}");
            std::process::exit(0);
        }
        if bare.contains(&arg.as_str()) {
            flags.insert(arg, String::new());
        } else if with_value.contains(&arg.as_str()) {
            match args.next() {
                Some(v) => flags.insert(arg, v),
                None => die(usage, &format!("{arg} needs a value")),
            };
        } else {
            die(usage, &format!("unknown argument '{arg}'"));
        }
    }
    flags
}

pub fn die(usage: &str, why: &str) -> ! {
    eprintln!("error: {why}\n{usage}");
    std::process::exit(2);
}

pub fn init() {
    gst::init().unwrap_or_else(|e| die("", &format!("GStreamer: {e}")));
    gstquicnalu::plugin_register_static()
        .unwrap_or_else(|e| die("", &format!("registering quicnalu: {e}")));
}

/// Plays `pipeline` until EOS (Ok) or an error (Err with the message).
pub fn run(pipeline: &gst::Pipeline) -> Result<(), String> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| wait_error(pipeline).unwrap_or_else(|| "cannot start".into()))?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let result = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::NONE) else {
            break Ok(());
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(describe(e)),
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn wait_error(pipeline: &gst::Pipeline) -> Option<String> {
    let msg = pipeline
        .bus()?
        .timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(describe(e)),
        _ => None,
    }
}

fn describe(e: &gst::message::Error) -> String {
    format!(
        "{} ({})",
        e.error(),
        e.debug().map(|d| d.to_string()).unwrap_or_default()
    )
}

pub fn launch(description: &str) -> gst::Pipeline {
    gst::parse::launch(description)
        .unwrap_or_else(|e| die("", &format!("pipeline '{description}': {e}")))
        .downcast::<gst::Pipeline>()
        .unwrap_or_else(|_| die("", "not a pipeline"))
}
