//! The fixture itself is built by issuing real commands; this checks it stands.
mod support;

use domain::Facts;
use support::*;

#[test]
fn the_fixture_builds_from_accepted_commands() {
    let f = Fixture::new();
    assert!(f.world.store.hospital(f.hospital_a).is_some());
    assert!(f.world.store.patient(f.patient).is_some());
    assert!(f.world.store.plan(f.plan_x).is_some());
    assert!(f.world.store.user(f.doctor.user_id).is_some());
}
