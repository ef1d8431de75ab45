//! The workspace memory through the CLI, as agents and people use it:
//! tasks (add, ready, claim as a compare-and-swap, release, update, close,
//! delete), decisions, the context, the projections in
//! `.agentos/memory/`, a daemon restart, and a claim made by an agent from
//! inside its own terminal.

mod support;

use serde_json::Value;
use std::path::Path;
use support::*;

fn json(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {o:?}"))
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn tasks_decisions_and_context_through_the_cli() {
    let n = Node::new();
    let repo = n.work.join("repo");
    git_repo(&repo);
    let ok = |args: &[&str]| n.ok_in(&repo, args);
    let run = |args: &[&str]| n.run_in(&repo, args);
    let mem = repo.join(".agentos/memory");

    // A workspace that never used its memory gets no files.
    let v = json(&ok(&["memory", "--json"]));
    assert_eq!(v["tasks"], serde_json::json!([]));
    assert!(!mem.exists(), "nothing written for an empty memory");

    let t1 = json(&ok(&[
        "task",
        "add",
        "write the parser",
        "--notes",
        "see RFC 7",
        "--json",
    ]));
    let id1 = t1["id"].as_str().unwrap().to_string();
    assert!(id1.starts_with("t-") && id1.len() == 10, "{id1}");
    assert_eq!(t1["status"], "open");
    assert_eq!(t1["notes"], "see RFC 7");
    let t2 = json(&ok(&["task", "add", "document it", "--json"]));
    let id2 = t2["id"].as_str().unwrap().to_string();
    let mut both = vec![id1.clone(), id2.clone()];
    both.sort();
    assert_eq!(ids(&json(&ok(&["task", "ready", "--json"]))), both);

    // Claims: a compare-and-swap. The holder's second claim is a no-op;
    // anyone else is refused with E028 and a hint.
    let c = json(&ok(&["task", "claim", &id1, "--as", "ann", "--json"]));
    assert_eq!(
        (c["holder"].as_str(), c["status"].as_str()),
        (Some("ann"), Some("in_progress"))
    );
    ok(&["task", "claim", &id1, "--as", "ann"]);
    let o = run(&["task", "claim", &id1, "--as", "bob"]);
    assert_eq!(o.code, 38, "{o:?}");
    assert!(
        o.stderr.contains("E028") && o.stderr.contains("held by ann"),
        "{o:?}"
    );
    assert!(o.stderr.contains("hint:"), "{o:?}");
    assert_eq!(
        ids(&json(&ok(&["task", "ready", "--json"]))),
        vec![id2.clone()]
    );
    // Released, it is bob's to take.
    ok(&["task", "release", &id1, "--as", "ann"]);
    let c = json(&ok(&["task", "claim", &id1, "--as", "bob", "--json"]));
    assert_eq!(c["holder"], "bob");

    // Bad input: a clear error, nothing changes.
    let o = run(&["task", "update", &id1, "--status", "finished"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr.contains("E012") && o.stderr.contains("in_progress"),
        "{o:?}"
    );
    let o = run(&["task", "close", "t-zzzzzzzz"]);
    assert!(o.stderr.contains("E029"), "{o:?}");
    let o = run(&["task", "add", "   "]);
    assert!(o.stderr.contains("E012"), "{o:?}");

    ok(&["task", "update", &id2, "--title", "document the parser"]);
    let closed = json(&ok(&[
        "task", "close", &id1, "--reason", "merged", "--json",
    ]));
    assert_eq!(
        (closed["status"].as_str(), closed["close_reason"].as_str()),
        (Some("closed"), Some("merged"))
    );
    ok(&["task", "delete", &id2]);
    assert_eq!(
        json(&ok(&["task", "list", "--json"])),
        serde_json::json!([])
    );
    let all = json(&ok(&["task", "list", "--all", "--json"]));
    assert_eq!(ids(&all), both, "closed and deleted tasks stay on record");

    // Decisions and the context.
    let d = json(&ok(&[
        "decision",
        "add",
        "Use sled for the store",
        "--json",
    ]));
    let did = d["id"].as_str().unwrap().to_string();
    assert!(did.starts_with("d-"), "{d}");
    ok(&["decision", "add", "Ship on Fridays"]);
    ok(&["decision", "delete", &did]);
    let ds = json(&ok(&["decision", "list", "--json"]));
    assert_eq!(ds.as_array().unwrap().len(), 2);
    std::fs::write(
        n.work.join("ctx.md"),
        "# Context\n\nThe parser lives in src/.\n",
    )
    .unwrap();
    ok(&["context", "set", n.work.join("ctx.md").to_str().unwrap()]);
    assert_eq!(
        ok(&["context", "show"]).stdout,
        "# Context\n\nThe parser lives in src/.\n"
    );

    // The projections follow the document.
    let lines: Vec<Value> = read(&mem.join("tasks.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        both
    );
    let closed_line = lines.iter().find(|l| l["id"] == id1.as_str()).unwrap();
    assert_eq!(closed_line["status"], "closed");
    assert!(
        lines
            .iter()
            .any(|l| l["id"] == id2.as_str() && !l["deleted_at_ms"].is_null())
    );
    let md = read(&mem.join("decisions.md"));
    assert!(
        md.contains("~~Use sled for the store~~") && md.contains("Ship on Fridays"),
        "{md}"
    );
    assert_eq!(
        read(&mem.join("context.md")),
        "# Context\n\nThe parser lives in src/.\n"
    );

    // From a subdirectory: the same workspace. After a restart: the same memory.
    let before = json(&ok(&["memory", "--json"]));
    let sub = repo.join("src");
    assert_eq!(json(&n.ok_in(&sub, &["memory", "--json"])), before);
    ok(&["daemon", "restart"]);
    assert_eq!(json(&ok(&["memory", "--json"])), before);

    // An agent claims a task from inside its terminal: the claim is its own.
    let t3 = json(&ok(&["task", "add", "agent work", "--json"]));
    let id3 = t3["id"].as_str().unwrap().to_string();
    let script = format!("{BIN} task claim {id3}; echo CLAIMED-$((6*7)); sleep 600");
    ok(&[
        "create",
        "worker",
        "--detach",
        "--isolation",
        "none",
        "--",
        "bash",
        "-c",
        &script,
    ]);
    n.wait_log("worker", "CLAIMED-42");
    let t = json(&ok(&["task", "list", "--json"]));
    let t3 = t
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id3.as_str())
        .unwrap();
    assert_eq!(t3["holder"], "agent:worker", "{t3}");

    // Another workspace has its own memory.
    let other = n.work.join("other");
    std::fs::create_dir_all(&other).unwrap();
    assert_eq!(
        json(&n.ok_in(&other, &["task", "list", "--all", "--json"])),
        serde_json::json!([])
    );
}
