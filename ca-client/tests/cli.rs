//! CLI snapshots (trycmd): help texts and the main error messages, each case
//! in `tests/cmd/*.toml` run with an empty environment and a HOME that does
//! not exist. Regenerate after an intended change with `TRYCMD=overwrite`.

#[test]
fn cli() {
    trycmd::TestCases::new().case("tests/cmd/*.toml");
}
