//! The workshop's exercises as data: their fenced code blocks, which of them the check runs, and the
//! shape every exercise must have.
//!
//! An exercise is a Markdown file `docs/workshop/NN-name.md`. Its code blocks say by their info
//! string what they are:
//!
//! | info string | what it is | run by the check |
//! |---|---|---|
//! | `sh` | a step on the native stack (`make demo`) | yes, in order, in one `bash` per exercise |
//! | `sh compose` | the same step with Docker Compose | no (the check has no Docker engine) |
//! | anything else (`text`, ...) | sample output, SQL to read | no |
//!
//! So what the reader types is exactly what the check runs: there is no second copy of the commands
//! to drift. The check itself (`tests/workshop.rs`) starts a shop, runs each exercise's `sh` blocks
//! and then asserts what the exercise says the reader will see.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};

/// One fenced code block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The info string after the opening fence, trimmed (`sh`, `sh compose`, `text`).
    pub info: String,
    /// The block's text, without the fences.
    pub code: String,
    /// The line of the opening fence (1-based), for messages.
    pub line: usize,
}

impl Block {
    /// A step the check runs: info string exactly `sh`.
    pub fn is_native(&self) -> bool {
        self.info == "sh"
    }

    /// The Docker Compose equivalent of a step.
    pub fn is_compose(&self) -> bool {
        let mut words = self.info.split_whitespace();
        words.next() == Some("sh") && words.any(|w| w == "compose")
    }
}

/// Every fenced block of a Markdown text (backtick fences of three or more; a block ends at a fence
/// at least as long as the one that opened it).
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = trimmed.chars().take_while(|c| *c == '`').count();
        match &mut open {
            None if fence >= 3 => {
                open = Some((fence, trimmed[fence..].trim().to_owned(), i + 1, String::new()));
            }
            Some((len, _, _, _)) if fence >= *len && trimmed[fence..].trim().is_empty() => {
                let (_, info, line, code) = open.take().expect("open block");
                out.push(Block { info, code, line });
            }
            Some((_, _, _, code)) => {
                code.push_str(line);
                code.push('\n');
            }
            None => {}
        }
    }
    out
}

/// One exercise file.
#[derive(Debug, Clone)]
pub struct Exercise {
    /// Its number (the file name's prefix).
    pub number: u32,
    /// The file.
    pub path: PathBuf,
    /// Its title (the first `# ` heading).
    pub title: String,
    /// The Markdown text.
    pub text: String,
}

/// The sections every exercise has, in this order.
pub const SECTIONS: &[&str] = &[
    "## Goal",
    "## Steps",
    "## What to look for",
    "## Questions",
    "## Solution",
    "## With Docker Compose",
];

impl Exercise {
    /// Its code blocks.
    pub fn blocks(&self) -> Vec<Block> {
        blocks(&self.text)
    }

    /// The script the check runs: every `sh` block in order, each announced on stderr.
    pub fn script(&self) -> String {
        let mut script = String::new();
        for block in self.blocks().into_iter().filter(Block::is_native) {
            script.push_str(&format!(
                "echo '--- {} line {}' >&2\n",
                self.path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("exercise"),
                block.line
            ));
            script.push_str(&block.code);
        }
        script
    }

    /// Checks the shape: a title, the sections in order, at least one native and one compose block.
    pub fn check_shape(&self) -> anyhow::Result<()> {
        let name = self.path.display();
        ensure!(!self.title.is_empty(), "{name}: no `# ` title");
        let mut from = 0;
        for section in SECTIONS {
            let at = self.text[from..]
                .find(&format!("\n{section}"))
                .with_context(|| format!("{name}: no `{section}` section (after the previous one)"))?;
            from += at + 1;
        }
        let blocks = self.blocks();
        ensure!(
            blocks.iter().any(Block::is_native),
            "{name}: no `sh` block for the check to run"
        );
        ensure!(
            blocks.iter().any(Block::is_compose),
            "{name}: no `sh compose` block naming the compose equivalent"
        );
        Ok(())
    }
}

/// The exercises in `dir` (files `NN-*.md`), by number.
pub fn exercises(dir: &Path) -> anyhow::Result<Vec<Exercise>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((prefix, _)) = name.split_once('-') else {
            continue;
        };
        if !name.ends_with(".md") || prefix.len() != 2 {
            continue;
        }
        let Ok(number) = prefix.parse::<u32>() else {
            continue;
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let title = text
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or_default()
            .trim()
            .to_owned();
        out.push(Exercise {
            number,
            path,
            title,
            text,
        });
    }
    out.sort_by_key(|e| e.number);
    for pair in out.windows(2) {
        if pair[0].number == pair[1].number {
            bail!("two exercises numbered {}", pair[0].number);
        }
    }
    Ok(out)
}

/// `docs/workshop` of this checkout.
pub fn workshop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the check crate lives in docs/workshop/check")
        .to_path_buf()
}

/// The checkout's root.
pub fn repo_root() -> PathBuf {
    workshop_dir()
        .ancestors()
        .nth(2)
        .expect("docs/workshop is two levels below the root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# 1. Sample\n\ntext\n\n```sh\necho one\n```\n\n```sh compose\ndocker compose ps\n```\n\n\
                          ````text\n```sh\nnot a block\n```\n````\n\n```sh\necho two\n```\n";

    #[test]
    fn blocks_are_split_by_their_info_string_and_nested_fences_stay_inside() {
        let b = blocks(SAMPLE);
        assert_eq!(b.len(), 4, "{b:?}");
        assert_eq!(
            (b[0].info.as_str(), b[0].code.as_str(), b[0].line),
            ("sh", "echo one\n", 5)
        );
        assert!(b[1].is_compose() && !b[1].is_native());
        assert_eq!(b[2].info, "text");
        assert_eq!(b[2].code, "```sh\nnot a block\n```\n");
        assert!(b[3].is_native());
    }

    #[test]
    fn the_script_is_the_native_blocks_in_order_and_nothing_else() {
        let e = Exercise {
            number: 1,
            path: "01-sample.md".into(),
            title: "1. Sample".into(),
            text: SAMPLE.into(),
        };
        let script = e.script();
        assert!(
            script.contains("echo one\n") && script.contains("echo two\n"),
            "{script}"
        );
        assert!(script.find("echo one") < script.find("echo two"));
        assert!(
            !script.contains("docker") && !script.contains("not a block"),
            "{script}"
        );
    }

    #[test]
    fn an_exercise_without_a_section_or_a_compose_block_is_refused() {
        let mut text = String::from("# 1. Sample\n");
        for s in SECTIONS {
            text.push_str(&format!("\n{s}\n\n```sh\ntrue\n```\n"));
        }
        let mut e = Exercise {
            number: 1,
            path: "01-sample.md".into(),
            title: "1. Sample".into(),
            text: text.clone(),
        };
        let err = e.check_shape().unwrap_err().to_string();
        assert!(err.contains("compose"), "{err}");
        e.text = text.replace(
            "```sh\ntrue\n```\n\n## With",
            "```sh compose\ntrue\n```\n\n## With",
        );
        e.text.push_str("\n```sh compose\ndocker compose ps\n```\n");
        e.check_shape().unwrap();
        e.text = e.text.replace("## Questions", "## Quiz");
        let err = e.check_shape().unwrap_err().to_string();
        assert!(err.contains("## Questions"), "{err}");
    }

    #[test]
    fn the_workshop_has_seven_to_nine_exercises_each_in_shape() {
        let all = exercises(&workshop_dir()).unwrap();
        assert!((7..=9).contains(&all.len()), "{} exercises", all.len());
        for (i, e) in all.iter().enumerate() {
            assert_eq!(
                e.number as usize,
                i + 1,
                "numbered 1, 2, 3, ...: {}",
                e.path.display()
            );
            e.check_shape().unwrap();
        }
    }
}
