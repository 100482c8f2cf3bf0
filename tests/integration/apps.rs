//! The application examples run as a user runs them and tell what they saw: examples/app.rs
//! (which `cargo test` builds into target/<profile>/examples/) and examples/app.py under the
//! system Python with GST_PLUGIN_PATH pointing at the built plugin; and `make demo`'s
//! loopback example without a display.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// Buffers each example reads QuicNaluMeta from before it ends the stream.
const FRAMES: usize = 30;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The newest modification time of `path` or of any file below it.
fn newest(path: &Path) -> SystemTime {
    let own = path.metadata().and_then(|m| m.modified()).unwrap();
    if !path.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| newest(&e.unwrap().path()))
        .fold(own, SystemTime::max)
}

/// target/<profile>/examples/`name`, checked to be built from the current sources.
fn rust_example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let app = profile.join("examples").join(name);
    let build = format!(
        "`cargo test --profile testing` builds the examples with the tests; when a \
         test is built alone, run `cargo build --profile testing --example {name}` first"
    );
    let built = app
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} not built: {build}", app.display()));
    let root = manifest_dir();
    for source in [
        root.join(format!("examples/{name}.rs")),
        root.join("examples/common"),
        root.join("src"),
        root.join("gst-plugin-meta/src"),
    ] {
        assert!(
            newest(&source) <= built,
            "{} is older than {}: {build}",
            app.display(),
            source.display()
        );
    }
    app
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// N from the line `receiver: N <what>...` of `stdout`.
fn receiver_count(stdout: &str, what: &str) -> Option<usize> {
    stdout.lines().find_map(|l| {
        let (n, rest) = l.strip_prefix("receiver: ")?.split_once(' ')?;
        rest.starts_with(what).then(|| n.parse().ok())?
    })
}

/// Both examples tell the same story; every step of it must be there.
fn expect_story(out: &Output) {
    let all = text(out);
    assert!(out.status.success(), "example failed: {all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in [
        "sender: listening on 127.0.0.1:",
        "sender: receiver ",
        "receiver: first buffer: seq=",
        "receiver: sending command ping",
        "sender: command from receiver ",
        "sender: answered receiver ",
        "receiver: command from sender: pong",
        "receiver: end of stream",
        "result: OK",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(step)),
            "no {step:?}: {all}"
        );
    }
    let first = stdout
        .lines()
        .find(|l| l.starts_with("receiver: first buffer:"))
        .unwrap();
    assert!(first.contains("keyframe"), "{first}");
    let with_meta = receiver_count(&stdout, "buffers with QuicNaluMeta");
    assert!(with_meta >= Some(FRAMES), "{all}");
    let decoded = receiver_count(&stdout, "pictures decoded");
    assert!(decoded > Some(0), "{all}");
}

#[test]
fn rust_app_commands_both_ways_and_meta() {
    let out = Command::new(rust_example("app"))
        .arg(FRAMES.to_string())
        .output()
        .expect("run the app example");
    expect_story(&out);
}

/// `/usr/bin/python3` with the built plugin alone in `plugins` (deps/ holds many other
/// libraries that GStreamer would try to load), a fresh registry, and no user plugin folder
/// (where `make install` may have put another build).
fn python(plugins: &Path, scratch: &Path) -> Command {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(manifest_dir().join("examples/app.py"))
        .env("GST_PLUGIN_PATH", plugins)
        .env("GST_REGISTRY", scratch.join("registry.bin"))
        .env("XDG_DATA_HOME", scratch.join("data"))
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("GST_PLUGIN_PATH_1_0")
        .env_remove("GST_REGISTRY_1_0");
    c
}

#[test]
fn python_app_commands_both_ways_and_meta() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = common::plugin_dir();
    let out = python(plugins.path(), tmp.path())
        .arg(FRAMES.to_string())
        .output()
        .expect("run /usr/bin/python3 (python3-gi)");
    expect_story(&out);
}

#[test]
fn python_app_fails_without_the_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let out = python(tmp.path(), tmp.path())
        .output()
        .expect("run /usr/bin/python3 (python3-gi)");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("quicnalusink not found"),
        "{}",
        text(&out)
    );
}

/// Without a display the demo never builds autovideosink (it can crash while probing) and
/// writes the first decoded picture to target/demo-frame.png instead.
#[test]
fn demo_writes_a_png_without_a_display() {
    let loopback = rust_example("loopback");
    // target/<profile>/examples/loopback -> target/demo-frame.png
    let expected = loopback.ancestors().nth(3).unwrap().join("demo-frame.png");
    let out = Command::new(&loopback)
        .args(["-s", "1"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .expect("run the loopback example");
    let all = text(&out);
    assert!(out.status.success(), "demo failed: {all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("result:               OK"), "{all}");
    let png = stdout
        .lines()
        .find_map(|l| l.strip_prefix("first decoded frame:  "))
        .unwrap_or_else(|| panic!("no PNG reported: {all}"));
    assert_eq!(Path::new(png), expected, "{all}");
    let bytes = std::fs::read(png).expect("the PNG file");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {png}");
}
