//! Extracts every ```rust block of README.md and docs/*.md, in order, into one async function
//! per file (`readme`, `client`, …) in `$OUT_DIR/examples.rs`. The blocks of a file continue
//! one another, as a reader reads them: a later block uses what an earlier one defined.

use std::path::{Path, PathBuf};

fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match current.as_mut() {
            Some(block) if line.trim_start().starts_with("```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None if line.trim() == "```rust" => current = Some(String::new()),
            None => {}
        }
    }
    out
}

fn main() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    println!("cargo:rerun-if-changed={}", root.join("docs").display());
    let mut out = String::new();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let text = std::fs::read_to_string(file).expect("readable");
        let blocks = blocks(&text);
        if blocks.is_empty() {
            continue;
        }
        let stem = file.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 name");
        let name = stem.to_ascii_lowercase().replace(['-', '.'], "_");
        out.push_str(&format!(
            "/// The Rust examples of `{}`, in order.\n\
             #[allow(unused, unreachable_code, clippy::all)]\n\
             pub async fn {name}(cs: &str, storage_cs: &str) -> anyhow::Result<()> {{\n\
             use ehub::*;\nuse ehub::processor::*;\nuse ehub_checkpoint_blob::*;\nuse std::sync::*;\nuse std::time::*;\n",
            file.strip_prefix(&root).unwrap_or(file).display()
        ));
        for b in blocks {
            out.push_str(&b);
        }
        out.push_str("Ok(())\n}\n\n");
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("set by cargo")).join("examples.rs");
    std::fs::write(dest, out).expect("writable OUT_DIR");
}
