//! CLI snapshots (trycmd) of `jitssh-ca`: every nested command takes its
//! options after the subcommand (where people type them), and the group
//! options of `audit` before or after it; each case in `tests/cmd/*.toml`
//! runs with an empty environment. Regenerate after an intended change with
//! `TRYCMD=overwrite`.

#[test]
fn cli() {
    trycmd::TestCases::new()
        .register_bin("jitssh-ca", trycmd::cargo::cargo_bin("jitssh-ca"))
        .case("tests/cmd/*.toml");
}
