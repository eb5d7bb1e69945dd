//! The README quick start runs as written (issue 17): its sample images are the ones the
//! committed generator makes, and its commands, read from README.md between the
//! `<!-- quick-start -->` markers, register the takedown photo and find the re-upload.
use crate::common::Daemon;

#[path = "../../examples/make_samples.rs"]
mod make_samples;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_sample_images_are_what_the_generator_makes() {
    let (takedown, reupload) = make_samples::render();
    for (path, made) in [
        (make_samples::TAKEDOWN_JPG, takedown),
        (make_samples::REUPLOAD_JPG, reupload),
    ] {
        let committed = std::fs::read(format!("{ROOT}/{path}")).expect("a committed sample image");
        assert!(committed.len() < 60_000, "{path} is {} bytes", committed.len());
        assert!(
            committed == made,
            "{path} differs from what `cargo run --example make_samples` makes: run it and commit the images"
        );
    }
}

/// Splits a shell command line into words: whitespace-separated, "double quotes" grouping.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// The commands of the README's quick-start block, continuation lines joined.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let start = readme
        .find("<!-- quick-start -->")
        .expect("the quick-start marker in README.md");
    let end = readme
        .find("<!-- /quick-start -->")
        .expect("the quick-start end marker");
    let block = &readme[start..end];
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("```") && !l.starts_with("<!--"))
        .map(words)
        .collect()
}

#[test]
fn the_readme_quick_start_commands_find_the_reupload() {
    let commands = readme_commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(
        commands[0][..3],
        ["target/release/relist", "takedown", "add"],
        "{commands:?}"
    );
    assert_eq!(commands[1][..2], ["target/release/relist", "check"], "{commands:?}");
    assert!(
        commands[0].iter().any(|w| w == make_samples::TAKEDOWN_JPG),
        "{commands:?}"
    );
    assert!(
        commands[1].iter().any(|w| w == make_samples::REUPLOAD_JPG),
        "{commands:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::serve(&tmp.path().join("data"), &[]);
    // As written, from the repository root; only the daemon's address comes from the
    // environment (the README's daemon is on the default 127.0.0.1:50051).
    let run = |argv: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_relist"))
            .args(&argv[1..])
            .current_dir(ROOT)
            .env("RELIST_ADDR", &d.addr)
            .env_remove("RELIST_API_KEY")
            .output()
            .expect("run relist")
    };
    let added = run(&commands[0]);
    let text = String::from_utf8_lossy(&added.stdout);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert!(text.contains("takedown 1 registered"), "{text}");
    let checked = run(&commands[1]);
    let text = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(
        checked.status.code(),
        Some(4),
        "not REUPLOAD: {text}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(text.starts_with("REUPLOAD"), "{text}");
}
