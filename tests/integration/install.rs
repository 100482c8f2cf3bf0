//! `make install`'s copy step (scripts/install-plugin.sh, run directly: cargo holds the build
//! lock while tests run) puts the plugin where GStreamer finds it without GST_PLUGIN_PATH,
//! and `make uninstall`'s takes away everything it put there, and nothing else.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Variables that would change where the plugin goes or where GStreamer looks, removed so
/// only what a test sets counts.
const AMBIENT: [&str; 8] = [
    "PREFIX",
    "DESTDIR",
    "LIBDIR",
    "XDG_DATA_HOME",
    "GST_PLUGIN_PATH",
    "GST_PLUGIN_PATH_1_0",
    "GST_REGISTRY",
    "GST_REGISTRY_1_0",
];

const LIBRARY: &str = "libgstquicnalu.so";
/// Next to the library: the folders install made, which uninstall may remove.
const RECORD: &str = ".libgstquicnalu.so.dirs";

fn command(program: impl AsRef<std::ffi::OsStr>, env: &[(&str, &Path)]) -> Command {
    let mut c = Command::new(program);
    for var in AMBIENT {
        c.env_remove(var);
    }
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c
}

fn succeed(mut c: Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(out.status.success(), "{c:?} failed: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn script_command(action: &str, env: &[(&str, &Path)]) -> Command {
    let mut c = command(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-plugin.sh"),
        env,
    );
    c.arg(action);
    if action == "install" {
        c.arg(common::plugin_library());
    }
    c
}

fn script(action: &str, env: &[(&str, &Path)]) -> String {
    succeed(script_command(action, env))
}

/// `gst-inspect-1.0 quicnalusink` with `env` and nothing else pointing at plugins.
fn inspect(env: &[(&str, &Path)]) -> Output {
    command("gst-inspect-1.0", env)
        .arg("quicnalusink")
        .output()
        .expect("run gst-inspect-1.0")
}

/// Every file and folder under `dir`.
fn contents(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(contents(&path));
        }
        found.push(path);
    }
    found.sort();
    found
}

/// The library installed under `dir`, the one file there besides its record.
fn library_and_record(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = contents(dir).into_iter().filter(|p| p.is_file()).collect();
    let library = files
        .iter()
        .find(|p| p.ends_with(LIBRARY))
        .unwrap_or_else(|| panic!("no library: {files:?}"))
        .clone();
    let expected = [library.with_file_name(RECORD), library.clone()];
    assert_eq!(files, expected, "the library and its record");
    library
}

#[test]
fn user_plugin_folder_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let registry = tmp.path().join("registry.bin");
    let env = [
        ("XDG_DATA_HOME", data.as_path()),
        ("GST_REGISTRY", registry.as_path()),
    ];

    let said = script("install", &env);
    let installed = data.join("gstreamer-1.0/plugins").join(LIBRARY);
    assert!(
        installed.is_file(),
        "not at {}: {said}",
        installed.display()
    );
    assert_eq!(
        contents(&data).len(),
        4,
        "only the library, its record and its folders"
    );

    let found = inspect(&env);
    assert!(found.status.success(), "not found: {}", describe(&found));
    let text = String::from_utf8_lossy(&found.stdout);
    assert!(
        text.contains(&*installed.to_string_lossy()),
        "loaded from somewhere else: {text}"
    );

    script("uninstall", &env);
    assert_eq!(contents(&data), Vec::<PathBuf>::new(), "left behind");
    // The same registry notices the plugin is gone.
    let gone = inspect(&env);
    assert!(!gone.status.success(), "still found: {}", describe(&gone));
}

#[test]
fn prefix_with_destdir() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = tmp.path().join("stage");
    std::fs::create_dir(&stage).unwrap();
    let env = [
        ("PREFIX", Path::new("/usr/local")),
        ("DESTDIR", stage.as_path()),
    ];

    script("install", &env);
    let installed = &library_and_record(&stage);
    // $DESTDIR/usr/local/lib[/<multiarch>]/gstreamer-1.0/libgstquicnalu.so
    let folder = installed.parent().unwrap();
    assert!(
        folder.ends_with("gstreamer-1.0") && folder.starts_with(stage.join("usr/local/lib")),
        "{}",
        installed.display()
    );

    // GStreamer loads it from there (pointed at it, as it would be with the prefix live).
    let registry = tmp.path().join("registry.bin");
    let data = tmp.path().join("data");
    let found = inspect(&[
        ("GST_PLUGIN_PATH", folder),
        ("GST_REGISTRY", &registry),
        ("XDG_DATA_HOME", &data),
    ]);
    assert!(found.status.success(), "not found: {}", describe(&found));

    script("uninstall", &env);
    assert_eq!(contents(&stage), Vec::<PathBuf>::new(), "left behind");
}

#[test]
fn prefix_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    std::fs::create_dir(&prefix).unwrap();
    let env = [("PREFIX", prefix.as_path())];

    script("install", &env);
    let installed = library_and_record(&prefix);
    assert!(installed.ends_with("gstreamer-1.0/libgstquicnalu.so"));
    // Every folder it made (all of them: the prefix was empty), deepest first.
    let record = std::fs::read_to_string(installed.with_file_name(RECORD)).unwrap();
    let mut made: Vec<PathBuf> = contents(&prefix)
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    made.reverse();
    assert_eq!(record.lines().map(PathBuf::from).collect::<Vec<_>>(), made);

    script("uninstall", &env);
    assert_eq!(contents(&prefix), Vec::<PathBuf>::new(), "left behind");
}

/// A folder that was there before install is not uninstall's to remove, even when empty.
#[test]
fn uninstall_keeps_folders_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mine = data.join("gstreamer-1.0");
    std::fs::create_dir_all(&mine).unwrap();
    let env = [("XDG_DATA_HOME", data.as_path())];

    script("install", &env);
    assert!(mine.join("plugins").join(LIBRARY).is_file());
    script("uninstall", &env);
    assert_eq!(
        contents(&data),
        vec![mine],
        "only the folder that was there before"
    );
}

/// Installing again over an install keeps the record of the folders the first one made, and
/// an install from before there was one (no record) loses only its library.
#[test]
fn reinstall_and_install_without_record() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    std::fs::create_dir(&prefix).unwrap();
    let env = [("PREFIX", prefix.as_path())];

    script("install", &env);
    script("install", &env);
    script("uninstall", &env);
    assert_eq!(contents(&prefix), Vec::<PathBuf>::new(), "left behind");

    script("install", &env);
    let record = library_and_record(&prefix).with_file_name(RECORD);
    std::fs::remove_file(&record).unwrap();
    let folders: Vec<PathBuf> = contents(&prefix)
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    script("uninstall", &env);
    assert_eq!(contents(&prefix), folders, "only the library goes");
}

/// Runs `action`, which must refuse with exit 2, name `var`, and change nothing under `tree`.
fn refused(action: &str, env: &[(&str, &Path)], var: &str, tree: &Path) {
    let before = contents(tree);
    let mut c = script_command(action, env);
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert_eq!(out.status.code(), Some(2), "{c:?}: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(var),
        "{c:?} does not name {var}: {stderr}"
    );
    assert_eq!(contents(tree), before, "{c:?} changed {}", tree.display());
}

/// A `..` in LIBDIR or PREFIX would put the plugin outside the prefix, and the walk up in
/// uninstall would remove folders there: both refuse it and touch nothing.
#[test]
fn dot_dot_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let prefix = t.join("a/b/prefix");
    // (PREFIX, LIBDIR, the variable the error names, where the library would have gone)
    let cases = [
        (
            prefix.clone(),
            "lib/../../..",
            "LIBDIR",
            t.join("a/gstreamer-1.0"),
        ),
        (
            prefix.clone(),
            "../../x",
            "LIBDIR",
            t.join("a/x/gstreamer-1.0"),
        ),
        (
            prefix.join("../../c"),
            "lib",
            "PREFIX",
            t.join("a/c/lib/gstreamer-1.0"),
        ),
    ];
    for (prefix_var, libdir, var, target) in cases {
        // A lived-in prefix: `lib/..` resolves only where lib exists.
        std::fs::create_dir_all(prefix.join("lib")).unwrap();
        let env = [
            ("PREFIX", prefix_var.as_path()),
            ("LIBDIR", Path::new(libdir)),
        ];
        refused("install", &env, var, t);
        // An empty folder where the library would be: the walk up used to remove it.
        std::fs::create_dir_all(&target).unwrap();
        refused("uninstall", &env, var, t);
        for entry in std::fs::read_dir(t).unwrap() {
            std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
        }
    }
}
