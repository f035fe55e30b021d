//! The wings' import order, read from the code: every `use crate::…` and `crate::…` path (and a
//! wing's `super::…`) of every file outside its test module. A wing imports only from itself and
//! from wings of a lower floor, and no files import each other in a circle, so a newcomer finds a
//! line's room from its layer, and a change at one floor can only break the floors above it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The wings, ground floor first. Wings on one floor do not import each other.
const FLOORS: &[&[&str]] = &[
    &["model"],
    &["settings"],
    &["kernel"],
    &["routing", "datapath"],
    &["metadata"],
    &["engine"],
    &["doctor", "observe"],
    &["commands", "daemon", "lab"],
];

fn floor(wing: &str) -> usize {
    FLOORS
        .iter()
        .position(|f| f.contains(&wing))
        .unwrap_or_else(|| panic!("{wing} is on no floor: add it to FLOORS"))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file of the library, relative to `src/` (the crate root and the binary, which
/// may import anything, left out).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src()).unwrap().to_path_buf();
            if !["lib.rs", "main.rs"].contains(&rel.to_str().unwrap()) {
                out.push(rel);
            }
        }
    }
}

/// The code of a file without its comments and its `#[cfg(test)] mod tests` (a test may build
/// its fixtures from anywhere).
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a use tree names, each as its segments: `a::{b, c::{d, self}}` gives `a::b`,
/// `a::c::d` and `a::c`. `s` starts after the `crate::` or `super::`.
fn tree(
    s: &mut std::iter::Peekable<std::str::Chars<'_>>,
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) {
    let mut path = prefix.to_vec();
    loop {
        while s.peek().is_some_and(|c| c.is_whitespace()) {
            s.next();
        }
        match s.peek() {
            Some('{') => {
                s.next();
                loop {
                    tree(s, &path, out);
                    while s.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                        s.next();
                    }
                    if s.peek() == Some(&'}') {
                        s.next();
                        return;
                    }
                    if s.peek().is_none() {
                        return;
                    }
                }
            }
            Some(c) if c.is_alphanumeric() || *c == '_' => {
                let mut ident = String::new();
                while s.peek().is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                    ident.push(s.next().unwrap());
                }
                if ident != "self" {
                    path.push(ident);
                }
                if s.peek() == Some(&':') {
                    s.next();
                    s.next();
                    continue;
                }
                out.push(path);
                return;
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

/// The paths a file's code names through `crate::` (and `super::`, as paths from its parent).
fn paths(file: &Path, text: &str) -> Vec<Vec<String>> {
    let parent: Vec<String> = {
        let mut p: Vec<String> = file
            .parent()
            .unwrap()
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        if file.file_name().unwrap() == "mod.rs" {
            p.pop();
        }
        p
    };
    let mut out = Vec::new();
    let code = code(text);
    for (word, prefix) in [("crate::", Vec::new()), ("super::", parent)] {
        for (at, _) in code.match_indices(word) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut rest = code[at + word.len()..].chars().peekable();
            tree(&mut rest, &prefix, &mut out);
        }
    }
    out
}

/// The file a path lands in: the deepest module file it names.
fn resolve(path: &[String], known: &BTreeSet<PathBuf>) -> Option<PathBuf> {
    (1..=path.len().min(2)).rev().find_map(|n| {
        let dir: PathBuf = path[..n].iter().collect();
        [dir.with_extension("rs"), dir.join("mod.rs")]
            .into_iter()
            .find(|f| known.contains(f))
    })
}

fn wing(file: &Path) -> String {
    let first = file.iter().next().unwrap().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Every file's imports of other files.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let known: BTreeSet<PathBuf> = all.iter().cloned().collect();
    all.iter()
        .map(|f| {
            let text = fs::read_to_string(src().join(f)).unwrap();
            let to = paths(f, &text)
                .iter()
                .filter_map(|p| resolve(p, &known))
                .filter(|t| t != f)
                .collect();
            (f.clone(), to)
        })
        .collect()
}

#[test]
fn every_wing_imports_only_from_itself_and_lower_floors() {
    let mut wrong = Vec::new();
    for (from, to) in graph() {
        for t in to {
            let (a, b) = (wing(&from), wing(&t));
            if a != b && floor(&b) >= floor(&a) {
                wrong.push(format!("{} -> {}", from.display(), t.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let g = graph();
    // Depth-first; a file met again while it is on the stack closes a circle.
    fn visit(
        f: &PathBuf,
        g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(i) = stack.iter().position(|s| s == f) {
            return Some(stack[i..].to_vec());
        }
        if !done.insert(f.clone()) {
            return None;
        }
        stack.push(f.clone());
        let found = g[f].iter().find_map(|t| visit(t, g, stack, done));
        stack.pop();
        found
    }
    let mut done = BTreeSet::new();
    for f in g.keys() {
        if let Some(circle) = visit(f, &g, &mut Vec::new(), &mut done) {
            let names: Vec<_> = circle.iter().map(|p| p.display().to_string()).collect();
            panic!("a circle: {} -> back", names.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_nested_and_flat_paths() {
    let text = "use crate::{a::{b, c::{self, D}}, e};\nfn f() { crate::g::h(); }\n\
                // crate::commented\n#[cfg(test)]\nmod tests { use crate::t; }";
    let mut got = paths(Path::new("x/y.rs"), text);
    got.sort();
    let want: Vec<Vec<String>> = [
        &["a", "b"][..],
        &["a", "c"],
        &["a", "c", "D"],
        &["e"],
        &["g", "h"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| (*s).to_owned()).collect())
    .collect();
    assert_eq!(got, want);
}
