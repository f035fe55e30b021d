//! Shell completion as the packages install it: bash sources `enipin completions bash` and calls
//! its function as Tab would; enipin, run by that script inside a test namespace, offers that
//! namespace's interfaces for `--interfaces` and the names under /run/netns for `--netns`.

use enipin_tests::{Netns, enipin_bin};

/// What bash's completion function puts in COMPREPLY for `WORDS` (the last is the word at the
/// cursor), run inside `ns` with the built enipin first on PATH, as the packages put it there.
fn complete(ns: &Netns, words: &[&str]) -> Vec<String> {
    let bin = enipin_bin();
    let dir = bin.parent().unwrap().display().to_string();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let (cword, cur) = (words.len() - 1, words[words.len() - 1]);
    let prev = words[words.len().saturating_sub(2)];
    let script = format!(
        "set -e\nexport PATH='{dir}':\"$PATH\"\nsource <(enipin completions bash)\n\
         COMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_TYPE=9\n\
         _clap_complete_enipin enipin '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        quoted.join(" ")
    );
    let out = ns
        .command("bash")
        .args(["-c", &script])
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    got.sort();
    got
}

#[test]
fn interfaces_and_namespaces_complete_from_the_machine() {
    enipin_tests::require();
    let ns = Netns::new("enipin-complete-").unwrap();
    // Veth pairs: the kernels of the matrix may lack the dummy module.
    ns.veth_pair("enp7s0", "ens8").unwrap();
    ns.veth_pair("wg0", "vx0").unwrap();
    // The namespace's own interfaces, never the root namespace's (its eth0, say).
    assert_eq!(
        complete(&ns, &["enipin", "attach", "--interfaces", "e"]),
        ["enp7s0", "ens8"]
    );
    // After a comma: every one, with the list before it.
    assert_eq!(
        complete(&ns, &["enipin", "watch", "--interfaces", "ens8,en"]),
        ["ens8,enp7s0", "ens8,ens8"]
    );
    assert_eq!(
        complete(&ns, &["enipin", "doctor", "--interfaces", "w"]),
        ["wg0"]
    );
    // --netns is global: after the command too. This test's namespace is under /run/netns.
    let name = ns.name();
    let prefix = &name[..name.len() - 2];
    let offered = complete(&ns, &["enipin", "status", "--netns", prefix]);
    assert!(offered.contains(&name.to_owned()), "{offered:?}");
    assert!(offered.iter().all(|n| n.starts_with(prefix)), "{offered:?}");
}
