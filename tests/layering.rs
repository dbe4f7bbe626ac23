//! `src/` is layered one way (README, "Architecture"): a module never uses, even indirectly,
//! a module that uses it. This reads the sources as `/work/helpers/tools/scc.py` did for
//! issue #15: an edge is a `crate::<top-level module>` path outside `#[cfg(test)]` (the rest
//! of a file after its first `#[cfg(test)]` line is left out, and so are `//` comments and
//! doc links), and every import circle is reported with the edges that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules below everything else, and the only `src/` modules each may use.
const FLOOR: [(&str, &[&str]); 3] = [("state", &[]), ("site", &[]), ("job", &["state", "site"])];

type Edges = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules of `root` (files and folders, without `main`, `lib` and `bin/`).
fn top_level_modules(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            if path.is_dir() {
                (name != "bin").then_some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_owned)
            }
        })
        .filter(|name| name != "main" && name != "lib")
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file as the check reads it: up to its first `#[cfg(test)]`, comments out.
fn production_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    regex::Regex::new(r"//[^\n]*")
        .unwrap()
        .replace_all(code, "")
        .into_owned()
}

/// Which top-level modules each top-level module of `root` uses.
fn module_edges(root: &Path) -> Edges {
    let modules = top_level_modules(root);
    let mut edges: Edges = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let path_use = regex::Regex::new(r"crate::(\w+)").unwrap();
    let grouped_use = regex::Regex::new(r"(?s)crate::\{([^}]*)\}").unwrap();
    let grouped_name = regex::Regex::new(r"(?:^|[,{\s])(\w+)").unwrap();
    let mut files = Vec::new();
    rust_files(root, &mut files);
    for file in files {
        let relative = file.strip_prefix(root).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let first = first.to_str().unwrap();
        let owner = first.strip_suffix(".rs").unwrap_or(first);
        let Some(used) = edges.get_mut(owner) else {
            continue;
        };
        let code = production_code(&std::fs::read_to_string(&file).unwrap());
        let named = path_use.captures_iter(&code).map(|c| c[1].to_owned());
        let grouped = grouped_use.captures_iter(&code).flat_map(|c| {
            grouped_name
                .captures_iter(&c[1])
                .map(|n| n[1].to_owned())
                .collect::<Vec<_>>()
        });
        for name in named.chain(grouped) {
            if modules.contains(&name) && name != owner {
                used.insert(name);
            }
        }
    }
    edges
}

/// Every set of two or more modules that reach each other, each with its inner edges.
fn import_circles(edges: &Edges) -> Vec<BTreeMap<String, BTreeSet<String>>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(module) = todo.pop() {
            for next in &edges[&module] {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reach(m))).collect();
    let mut circles = Vec::new();
    let mut placed = BTreeSet::new();
    for module in edges.keys() {
        if placed.contains(module) || !reachable[module].contains(module) {
            continue;
        }
        let members: BTreeSet<String> = reachable[module]
            .iter()
            .filter(|other| reachable[*other].contains(module))
            .cloned()
            .collect();
        placed.extend(members.iter().cloned());
        circles.push(
            members
                .iter()
                .map(|m| (m.clone(), &edges[m] & &members))
                .collect(),
        );
    }
    circles
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_of_src_uses_a_module_that_uses_it() {
    let circles = import_circles(&module_edges(&src()));
    assert!(
        circles.is_empty(),
        "import circles in src/ (module -> the modules of its circle it uses): {circles:#?}"
    );
}

#[test]
fn the_floor_modules_use_nothing_above_them() {
    let edges = module_edges(&src());
    for (module, allowed) in FLOOR {
        let used = &edges[module];
        let above: Vec<&String> = used
            .iter()
            .filter(|u| !allowed.contains(&u.as_str()))
            .collect();
        assert!(
            above.is_empty(),
            "src/{module} may use only {allowed:?} of src/, but uses {above:?}"
        );
    }
}

/// The check itself: a back edge written into a copy of a layered tree is found, and one
/// inside `#[cfg(test)]` or a comment is not.
#[test]
fn a_back_edge_closes_a_circle_the_check_reports() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "lib.rs",
        "pub mod controller;\npub mod job;\npub mod state;\n",
    );
    write(
        "controller/mod.rs",
        "use crate::{job::new_record, state};\n",
    );
    write(
        "job.rs",
        "use crate::state::JobRecord;\n// crate::controller is above\n#[cfg(test)]\nmod tests { use crate::controller::Controller; }\n",
    );
    write("state/mod.rs", "");
    assert!(import_circles(&module_edges(dir.path())).is_empty());

    write(
        "job.rs",
        "use crate::state::JobRecord;\nuse crate::controller::Controller;\n",
    );
    let circles = import_circles(&module_edges(dir.path()));
    assert_eq!(circles.len(), 1, "{circles:?}");
    let circle: Vec<(&str, Vec<&str>)> = circles[0]
        .iter()
        .map(|(m, used)| (m.as_str(), used.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        circle,
        [("controller", vec!["job"]), ("job", vec!["controller"])]
    );
}
