//! `docs/reference/settings.md` is generated from the schema table and must
//! be up to date. Regenerate with
//! `SAFERC_BLESS=1 cargo test -p safer-tests --test settings_reference`.

use safer_tests::repo_root;

#[test]
fn settings_reference_is_up_to_date() {
    let path = repo_root().join("docs/reference/settings.md");
    let generated = saferc::semantic::reference::markdown();
    if std::env::var_os("SAFERC_BLESS").is_some() {
        let _ = std::fs::write(&path, &generated);
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/reference/settings.md is out of date: run `SAFERC_BLESS=1 cargo test -p safer-tests --test settings_reference`"
    );
}

#[test]
fn every_schema_key_is_documented_on_the_page() {
    let page = saferc::semantic::reference::markdown();
    for (_, block) in saferc::semantic::schema::all_decl_blocks() {
        for key in block.keys {
            assert!(
                page.contains(&format!("| `{}` |", key.name)),
                "{} missing",
                key.name
            );
        }
    }
}
