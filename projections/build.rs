// `sqlx::migrate!` embeds `migrations/` at compile time; a migration added or changed must
// rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
