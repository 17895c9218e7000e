//! The README's commands work as written: every code block marked
//! `<!-- runnable -->` (the line before its fence) is run by bash with
//! `set -euo pipefail`, from the repository's root, with the `ramcoord`
//! this test was built with first on the PATH. `cargo run --release --
//! ARGS` in a block runs that same binary with ARGS (a shell function
//! stands in for cargo: building a second, release binary inside the test
//! would only test cargo). A block that fails fails the test with its
//! output.
//!
//! Also checked: at least the blocks this test knows of are marked (a
//! block losing its mark would silently stop being tested).

use std::path::Path;
use std::process::Command;

/// The runnable blocks: (first line number, the block's text).
fn runnable_blocks(readme: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "<!-- runnable -->" {
            let fence = lines.get(i + 1).map(|l| l.trim_start()).unwrap_or_default();
            assert!(
                fence.starts_with("```sh"),
                "README line {}: a runnable mark must be followed by a ```sh fence",
                i + 1
            );
            let indent = lines[i + 1].len() - fence.len();
            let start = i + 2;
            let mut j = start;
            while j < lines.len() && lines[j].trim() != "```" {
                j += 1;
            }
            assert!(j < lines.len(), "README line {}: unclosed block", i + 2);
            let body: Vec<&str> = lines[start..j]
                .iter()
                .map(|l| {
                    if l.len() >= indent {
                        &l[indent..]
                    } else {
                        l.trim_start()
                    }
                })
                .collect();
            out.push((start + 1, body.join("\n")));
            i = j;
        }
        i += 1;
    }
    out
}

#[test]
fn the_readmes_runnable_blocks_work() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(Path::new(root).join("README.md")).unwrap();
    let blocks = runnable_blocks(&readme);
    let all: String = blocks.iter().map(|(_, b)| b.as_str()).collect();
    for expected in [
        "cargo run --release -- demo",
        "ramcoord dev",
        "watch --from 1",
        "snapshot save",
        "--check-config",
    ] {
        assert!(
            all.contains(expected),
            "no runnable block runs {expected:?}"
        );
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_ramcoord"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Whatever the blocks leave in temporary directories goes here.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("readme-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (line, block) in blocks {
        let script = format!(
            "set -euo pipefail\n\
             cargo() {{ if [ \"$1 $2 $3\" = \"run --release --\" ]; then shift 3; ramcoord \"$@\"; \
             else echo \"this test runs only cargo run --release -- ...\" >&2; return 2; fi; }}\n\
             {block}\n"
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(root)
            .env("PATH", &path)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "README block at line {line} failed ({}):\n{block}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        println!("README block at line {line}: ok\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
