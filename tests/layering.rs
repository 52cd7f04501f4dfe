//! The module map in `src/lib.rs` is a checked claim, not a comment.
//!
//! `lib.rs` lists every top-level module in a table with its layer number. This test reads that
//! table and the source tree and fails when:
//! - a module exists (`src/x.rs`, `src/x/`, or `pub mod x;`) that the table does not name, or the
//!   table names one that does not exist;
//! - any code under `src/x…` refers to `crate::y` where `y`'s layer is not strictly lower than
//!   `x`'s (an upward or sideways edge; with strict layers no import cycle can exist either).
//!
//! Comments are ignored (doc links to higher modules are fine); code in `#[cfg(test)]` modules
//! counts like any other code.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `| layer | [`module`] | … |` rows of lib.rs's table: module → layer.
fn layer_table(lib: &str) -> BTreeMap<String, u32> {
    let mut table = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(layer), Some(module)) = (cells.first(), cells.get(1)) else {
            continue;
        };
        let Ok(layer) = layer.parse::<u32>() else {
            continue; // the header and separator rows
        };
        let name = module
            .strip_prefix("[`")
            .and_then(|m| m.strip_suffix("`]"))
            .unwrap_or_else(|| panic!("lib.rs table row names no [`module`]: {line}"));
        assert!(
            table.insert(name.to_string(), layer).is_none(),
            "lib.rs table names {name} twice"
        );
    }
    table
}

/// `pub mod x;` (or `mod x;`) lines of lib.rs.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

/// Top-level modules as files and folders under src/.
fn tree_modules() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for entry in fs::read_dir(src_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let is_module = path.is_dir()
            || (path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main");
        if is_module {
            found.insert(name);
        }
    }
    found
}

/// Every .rs file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments or the contents of string literals, so that neither a doc link
/// nor a help text counts as a dependency.
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut block_depth = 0;
    while let Some(c) = chars.next() {
        if block_depth > 0 {
            if c == '*' && chars.peek() == Some(&'/') {
                chars.next();
                block_depth -= 1;
            } else if c == '/' && chars.peek() == Some(&'*') {
                chars.next();
                block_depth += 1;
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                block_depth = 1;
            }
            '"' => {
                // Raw strings (r"…", r#"…"#) are rare here and contain no quotes we care about
                // beyond their end; an ordinary string ends at an unescaped quote.
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level modules `code` refers to through `crate::`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::{c, d}, e};`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphabetic() || c == '_') => {
                        refs.insert(identifier(&group[i..]));
                        item_start = false;
                    }
                    c if !c.is_whitespace() => item_start = false,
                    _ => {}
                }
            }
        } else {
            refs.insert(identifier(rest));
        }
    }
    refs.remove("");
    refs
}

fn identifier(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn the_module_table_names_every_module_and_only_those() {
    let lib = fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let table: BTreeSet<String> = layer_table(&lib).into_keys().collect();
    let declared = declared_modules(&lib);
    let tree = tree_modules();
    assert!(!table.is_empty(), "lib.rs has no layer table");
    assert_eq!(table, declared, "lib.rs table vs its `pub mod` lines");
    assert_eq!(
        tree, declared,
        "src/ files and folders vs lib.rs `pub mod` lines"
    );
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let lib = fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let layers = layer_table(&lib);
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut bad = Vec::new();
    let mut edges = 0;
    for file in files {
        let relative = file.strip_prefix(src_dir()).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let top = Path::new(top).file_stem().unwrap().to_string_lossy();
        if top == "lib" || top == "main" {
            continue;
        }
        let own = *layers
            .get(top.as_ref())
            .unwrap_or_else(|| panic!("{} is in no layer of lib.rs's table", relative.display()));
        let code = code_only(&fs::read_to_string(&file).unwrap());
        for target in crate_references(&code) {
            if target == top || target == "self" {
                continue;
            }
            edges += 1;
            match layers.get(&target) {
                None => bad.push(format!(
                    "{}: crate::{target} is not a module in lib.rs's table",
                    relative.display()
                )),
                Some(&layer) if layer >= own => bad.push(format!(
                    "{} (layer {own}) uses crate::{target} (layer {layer})",
                    relative.display()
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        edges > 20,
        "found only {edges} crate:: references; is the scan broken?"
    );
    assert!(
        bad.is_empty(),
        "edges against lib.rs's layer order:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scanner_sees_through_comments_strings_and_groups() {
    let code = code_only(
        "use crate::{wire::{self, A}, secret::Secret};\n\
         /// [`crate::dispatch`] is only a doc link\n\
         let s = \"crate::relay in a string\"; /* crate::demo */\n\
         let x = crate::text::cut(y); // crate::stub\n\
         let y = mcp_tunnel_crate::nothing;",
    );
    let refs: Vec<String> = crate_references(&code).into_iter().collect();
    assert_eq!(refs, ["secret", "text", "wire"]);
}
