//! The admin commands: organisations, users and their roles, edge nodes, merging patients.
mod support;

use domain::Facts;
use domain::command::*;
use domain::event::*;
use domain::values::*;
use ed25519_dalek::SigningKey;
use support::*;

fn username(s: &str) -> Username {
    Username::parse(s).unwrap()
}

fn node_key(seed: u8) -> NodePublicKey {
    NodePublicKey::from_verifying_key(&SigningKey::from_bytes(&[seed; 32]).verifying_key())
}

/// A new staff account of `org` with these roles.
fn new_user(user_id: UserId, org: impl Into<OrgId>, roles: &[Role]) -> RegisterUser {
    RegisterUser {
        user_id,
        username: username("wanjiru.k"),
        password_hash: hash(),
        display_name: name("Wanjiru Kamau"),
        org_id: org.into(),
        roles: roles.to_vec(),
        patient_id: None,
    }
}

fn roles_of(f: &Fixture, user: UserId) -> Vec<Role> {
    let user = f.world.store.user(user).expect("user exists");
    user.roles.into_iter().collect()
}

// --- RegisterHospital ------------------------------------------------------------------

fn new_hospital(id: HospitalId) -> RegisterHospital {
    RegisterHospital {
        hospital_id: id,
        name: name("Kisumu County Referral"),
        region_code: region("KE-42"),
    }
}

#[test]
fn a_system_admin_registers_a_hospital() {
    let mut f = Fixture::new();
    let id = HospitalId::from_uuid(f.id());
    f.world.then(
        &f.admin,
        new_hospital(id),
        vec![
            HospitalRegistered {
                hospital_id: id,
                name: name("Kisumu County Referral"),
                region_code: region("KE-42"),
            }
            .into(),
        ],
    );
}

#[test]
fn a_hospital_admin_cannot_register_a_hospital() {
    let mut f = Fixture::new();
    let id = HospitalId::from_uuid(f.id());
    f.world
        .then_refused(&f.hospital_admin, new_hospital(id), Refused::Forbidden);
}

#[test]
fn a_doctor_cannot_register_a_hospital() {
    let mut f = Fixture::new();
    let id = HospitalId::from_uuid(f.id());
    f.world
        .then_refused(&f.doctor, new_hospital(id), Refused::Forbidden);
}

#[test]
fn a_hospital_cannot_be_registered_twice() {
    let f = Fixture::new();
    f.world
        .then_refused(&f.admin, new_hospital(f.hospital_a), Refused::Conflict);
}

#[test]
fn a_hospital_cannot_take_the_id_of_an_insurer() {
    let f = Fixture::new();
    let id = HospitalId::from_uuid(f.insurer_x.as_uuid());
    f.world
        .then_refused(&f.admin, new_hospital(id), Refused::Conflict);
}

// --- RegisterInsurer -------------------------------------------------------------------

fn new_insurer(id: InsurerId) -> RegisterInsurer {
    RegisterInsurer {
        insurer_id: id,
        name: name("Jubilee Health"),
    }
}

#[test]
fn a_system_admin_registers_an_insurer() {
    let mut f = Fixture::new();
    let id = InsurerId::from_uuid(f.id());
    f.world.then(
        &f.admin,
        new_insurer(id),
        vec![
            InsurerRegistered {
                insurer_id: id,
                name: name("Jubilee Health"),
            }
            .into(),
        ],
    );
}

#[test]
fn a_hospital_admin_cannot_register_an_insurer() {
    let mut f = Fixture::new();
    let id = InsurerId::from_uuid(f.id());
    f.world
        .then_refused(&f.hospital_admin, new_insurer(id), Refused::Forbidden);
}

#[test]
fn an_insurer_cannot_register_an_insurer() {
    let mut f = Fixture::new();
    let id = InsurerId::from_uuid(f.id());
    f.world
        .then_refused(&f.insurer_x_user, new_insurer(id), Refused::Forbidden);
}

#[test]
fn an_insurer_cannot_be_registered_twice() {
    let f = Fixture::new();
    f.world
        .then_refused(&f.admin, new_insurer(f.insurer_x), Refused::Conflict);
}

#[test]
fn an_insurer_cannot_take_the_id_of_a_hospital() {
    let f = Fixture::new();
    let id = InsurerId::from_uuid(f.hospital_a.as_uuid());
    f.world
        .then_refused(&f.admin, new_insurer(id), Refused::Conflict);
}

// --- RegisterUser ----------------------------------------------------------------------

#[test]
fn a_system_admin_registers_a_staff_member_of_a_hospital() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.then(
        &f.admin,
        new_user(id, f.hospital_a, &[Role::Nurse, Role::Receptionist]),
        vec![
            UserRegistered {
                user_id: id,
                username: username("wanjiru.k"),
                password_hash: hash(),
                display_name: name("Wanjiru Kamau"),
                org_id: f.hospital_a.into(),
                roles: vec![Role::Nurse, Role::Receptionist],
                patient_id: None,
            }
            .into(),
        ],
    );
}

#[test]
fn a_registered_user_is_active_with_their_organisation_and_roles() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world
        .ok(&f.admin, new_user(id, f.insurer_x, &[Role::Insurer]));
    let user = f.world.store.user(id).unwrap();
    assert!(user.active);
    assert_eq!(user.org_id, OrgId::from(f.insurer_x));
    assert_eq!(roles_of(&f, id), vec![Role::Insurer]);
}

#[test]
fn a_hospital_admin_registers_staff_of_their_own_hospital() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.ok(
        &f.hospital_admin,
        new_user(id, f.hospital_a, &[Role::Pharmacist]),
    );
    let user = f.world.store.user(id).unwrap();
    assert_eq!(user.org_id, OrgId::from(f.hospital_a));
    assert_eq!(roles_of(&f, id), vec![Role::Pharmacist]);
}

#[test]
fn a_hospital_admin_cannot_register_staff_of_another_hospital() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.hospital_admin,
        new_user(id, f.hospital_b, &[Role::Doctor]),
        Refused::Forbidden,
    );
}

#[test]
fn a_hospital_admin_cannot_register_a_system_user() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.hospital_admin,
        new_user(id, OrgId::SYSTEM, &[Role::Admin]),
        Refused::Forbidden,
    );
}

#[test]
fn a_doctor_cannot_register_a_user() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.doctor,
        new_user(id, f.hospital_a, &[Role::Nurse]),
        Refused::Forbidden,
    );
}

#[test]
fn a_user_of_an_unknown_organisation_is_not_found() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    let unknown = HospitalId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        new_user(id, unknown, &[Role::Nurse]),
        Refused::NotFound(AggregateType::Hospital),
    );
}

#[test]
fn a_user_id_cannot_be_registered_twice() {
    let f = Fixture::new();
    let mut again = new_user(f.doctor.user_id, f.hospital_a, &[Role::Doctor]);
    again.username = username("someone.new");
    f.world.then_refused(&f.admin, again, Refused::Conflict);
}

#[test]
fn a_username_that_is_taken_is_refused() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    let mut user = new_user(id, f.hospital_a, &[Role::Nurse]);
    // The fixture's receptionist is `user101`; names are compared lower-case.
    user.username = username("USER101");
    f.world.then_refused(&f.admin, user, Refused::Conflict);
}

#[test]
fn an_insurer_role_does_not_fit_a_hospital_user() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        new_user(id, f.hospital_a, &[Role::Insurer]),
        Refused::Invalid("roles"),
    );
}

#[test]
fn a_doctor_role_does_not_fit_an_insurer_user() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        new_user(id, f.insurer_x, &[Role::Insurer, Role::Doctor]),
        Refused::Invalid("roles"),
    );
}

#[test]
fn a_clinical_role_does_not_fit_a_system_user() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        new_user(id, OrgId::SYSTEM, &[Role::Auditor, Role::Nurse]),
        Refused::Invalid("roles"),
    );
}

#[test]
fn a_system_admin_registers_an_auditor_and_an_analyst() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.ok(
        &f.admin,
        new_user(id, OrgId::SYSTEM, &[Role::Auditor, Role::Analyst]),
    );
    assert_eq!(f.world.store.user(id).unwrap().org_id, OrgId::SYSTEM);
    assert_eq!(roles_of(&f, id), vec![Role::Auditor, Role::Analyst]);
}

#[test]
fn a_patient_account_is_linked_to_its_record() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    let mut account = new_user(id, f.hospital_a, &[Role::Patient]);
    account.patient_id = Some(f.other_patient);
    f.world.then(
        &f.admin,
        account,
        vec![
            UserRegistered {
                user_id: id,
                username: username("wanjiru.k"),
                password_hash: hash(),
                display_name: name("Wanjiru Kamau"),
                org_id: f.hospital_a.into(),
                roles: vec![Role::Patient],
                patient_id: Some(f.other_patient),
            }
            .into(),
        ],
    );
}

#[test]
fn a_patient_account_holds_the_patient_role_alone() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    let mut account = new_user(id, f.hospital_a, &[Role::Patient, Role::Nurse]);
    account.patient_id = Some(f.other_patient);
    f.world
        .then_refused(&f.admin, account, Refused::Invalid("roles"));
}

#[test]
fn a_patient_account_needs_a_patient_id() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        new_user(id, f.hospital_a, &[Role::Patient]),
        Refused::Invalid("patient_id"),
    );
}

#[test]
fn a_staff_account_cannot_carry_a_patient_id() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    let mut account = new_user(id, f.hospital_a, &[Role::Nurse]);
    account.patient_id = Some(f.other_patient);
    f.world
        .then_refused(&f.admin, account, Refused::Invalid("patient_id"));
}

#[test]
fn a_patient_account_for_an_unknown_record_is_not_found() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    let mut account = new_user(id, f.hospital_a, &[Role::Patient]);
    account.patient_id = Some(PatientId::from_uuid(f.id()));
    f.world
        .then_refused(&f.admin, account, Refused::NotFound(AggregateType::Patient));
}

#[test]
fn a_patient_account_cannot_be_linked_to_a_record_of_another_hospital() {
    let mut f = Fixture::new();
    let id = UserId::from_uuid(f.id());
    let mut account = new_user(id, f.hospital_a, &[Role::Patient]);
    account.patient_id = Some(f.b_patient);
    f.world
        .then_refused(&f.admin, account, Refused::Invalid("patient_id"));
}

// --- AssignRole ------------------------------------------------------------------------

#[test]
fn a_system_admin_assigns_a_role() {
    let f = Fixture::new();
    f.world.then(
        &f.admin,
        AssignRole {
            user_id: f.nurse.user_id,
            role: Role::Receptionist,
        },
        vec![
            RoleAssigned {
                user_id: f.nurse.user_id,
                org_id: f.hospital_a.into(),
                role: Role::Receptionist,
            }
            .into(),
        ],
    );
}

#[test]
fn an_assigned_role_is_added_to_the_users_roles() {
    let mut f = Fixture::new();
    let nurse = f.nurse.user_id;
    f.world.ok(
        &f.hospital_admin,
        AssignRole {
            user_id: nurse,
            role: Role::Receptionist,
        },
    );
    assert_eq!(roles_of(&f, nurse), vec![Role::Nurse, Role::Receptionist]);
}

#[test]
fn a_hospital_admin_cannot_assign_a_role_to_staff_of_another_hospital() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.hospital_admin,
        AssignRole {
            user_id: f.b_doctor.user_id,
            role: Role::Nurse,
        },
        Refused::Forbidden,
    );
}

#[test]
fn a_doctor_cannot_assign_a_role() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.doctor,
        AssignRole {
            user_id: f.nurse.user_id,
            role: Role::Doctor,
        },
        Refused::Forbidden,
    );
}

#[test]
fn assigning_a_role_to_an_unknown_user_is_not_found() {
    let mut f = Fixture::new();
    let unknown = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        AssignRole {
            user_id: unknown,
            role: Role::Nurse,
        },
        Refused::NotFound(AggregateType::User),
    );
}

#[test]
fn a_role_already_held_cannot_be_assigned_again() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.admin,
        AssignRole {
            user_id: f.doctor.user_id,
            role: Role::Doctor,
        },
        Refused::Conflict,
    );
}

#[test]
fn a_deactivated_user_cannot_be_given_a_role() {
    let mut f = Fixture::new();
    let nurse = f.nurse.user_id;
    f.world.ok(&f.admin, DeactivateUser { user_id: nurse });
    f.world.then_refused(
        &f.admin,
        AssignRole {
            user_id: nurse,
            role: Role::Receptionist,
        },
        Refused::Conflict,
    );
}

#[test]
fn an_insurer_role_cannot_be_assigned_to_hospital_staff() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.admin,
        AssignRole {
            user_id: f.accountant.user_id,
            role: Role::Insurer,
        },
        Refused::Invalid("role"),
    );
}

#[test]
fn the_patient_role_cannot_be_added_to_a_staff_account() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.admin,
        AssignRole {
            user_id: f.doctor.user_id,
            role: Role::Patient,
        },
        Refused::Invalid("role"),
    );
}

#[test]
fn a_staff_role_cannot_be_added_to_a_patient_account() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.admin,
        AssignRole {
            user_id: f.patient_user.user_id,
            role: Role::Nurse,
        },
        Refused::Invalid("role"),
    );
}

// --- RevokeRole ------------------------------------------------------------------------

#[test]
fn a_system_admin_revokes_a_role() {
    let f = Fixture::new();
    f.world.then(
        &f.admin,
        RevokeRole {
            user_id: f.insurer_y_user.user_id,
            role: Role::Insurer,
        },
        vec![
            RoleRevoked {
                user_id: f.insurer_y_user.user_id,
                org_id: f.insurer_y.into(),
                role: Role::Insurer,
            }
            .into(),
        ],
    );
}

#[test]
fn a_revoked_role_is_removed_from_the_users_roles() {
    let mut f = Fixture::new();
    let nurse = f.nurse.user_id;
    f.world.ok(
        &f.hospital_admin,
        AssignRole {
            user_id: nurse,
            role: Role::Doctor,
        },
    );
    f.world.ok(
        &f.hospital_admin,
        RevokeRole {
            user_id: nurse,
            role: Role::Nurse,
        },
    );
    assert_eq!(roles_of(&f, nurse), vec![Role::Doctor]);
}

#[test]
fn a_role_not_held_cannot_be_revoked() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.admin,
        RevokeRole {
            user_id: f.nurse.user_id,
            role: Role::Doctor,
        },
        Refused::Conflict,
    );
}

#[test]
fn a_hospital_admin_cannot_revoke_a_role_of_staff_of_another_hospital() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.hospital_admin,
        RevokeRole {
            user_id: f.b_doctor.user_id,
            role: Role::Doctor,
        },
        Refused::Forbidden,
    );
}

#[test]
fn a_hospital_admin_cannot_revoke_a_role_of_an_insurers_user() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.hospital_admin,
        RevokeRole {
            user_id: f.insurer_x_user.user_id,
            role: Role::Insurer,
        },
        Refused::Forbidden,
    );
}

#[test]
fn a_nurse_cannot_revoke_a_role() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.nurse,
        RevokeRole {
            user_id: f.doctor.user_id,
            role: Role::Doctor,
        },
        Refused::Forbidden,
    );
}

#[test]
fn revoking_a_role_of_an_unknown_user_is_not_found() {
    let mut f = Fixture::new();
    let unknown = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        RevokeRole {
            user_id: unknown,
            role: Role::Nurse,
        },
        Refused::NotFound(AggregateType::User),
    );
}

#[test]
fn a_deactivated_user_cannot_lose_a_role() {
    let mut f = Fixture::new();
    let nurse = f.nurse.user_id;
    f.world.ok(&f.admin, DeactivateUser { user_id: nurse });
    f.world.then_refused(
        &f.admin,
        RevokeRole {
            user_id: nurse,
            role: Role::Nurse,
        },
        Refused::Conflict,
    );
}

// --- DeactivateUser --------------------------------------------------------------------

#[test]
fn a_system_admin_deactivates_a_user() {
    let f = Fixture::new();
    f.world.then(
        &f.admin,
        DeactivateUser {
            user_id: f.b_pharmacist.user_id,
        },
        vec![
            UserDeactivated {
                user_id: f.b_pharmacist.user_id,
                org_id: f.hospital_b.into(),
            }
            .into(),
        ],
    );
}

#[test]
fn a_deactivated_user_is_inactive_and_keeps_their_roles() {
    let mut f = Fixture::new();
    let pharmacist = f.pharmacist.user_id;
    f.world.ok(
        &f.hospital_admin,
        DeactivateUser {
            user_id: pharmacist,
        },
    );
    let user = f.world.store.user(pharmacist).unwrap();
    assert!(!user.active);
    assert_eq!(roles_of(&f, pharmacist), vec![Role::Pharmacist]);
}

#[test]
fn a_user_cannot_be_deactivated_twice() {
    let mut f = Fixture::new();
    let nurse = f.nurse.user_id;
    f.world.ok(&f.admin, DeactivateUser { user_id: nurse });
    f.world.then_refused(
        &f.admin,
        DeactivateUser { user_id: nurse },
        Refused::Conflict,
    );
}

#[test]
fn an_admin_cannot_deactivate_their_own_account() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.hospital_admin,
        DeactivateUser {
            user_id: f.hospital_admin.user_id,
        },
        Refused::Conflict,
    );
}

#[test]
fn a_hospital_admin_cannot_deactivate_staff_of_another_hospital() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.hospital_admin,
        DeactivateUser {
            user_id: f.b_accountant.user_id,
        },
        Refused::Forbidden,
    );
}

#[test]
fn a_receptionist_cannot_deactivate_a_user() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.receptionist,
        DeactivateUser {
            user_id: f.nurse.user_id,
        },
        Refused::Forbidden,
    );
}

#[test]
fn deactivating_an_unknown_user_is_not_found() {
    let mut f = Fixture::new();
    let unknown = UserId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        DeactivateUser { user_id: unknown },
        Refused::NotFound(AggregateType::User),
    );
}

// --- RegisterEdgeNode ------------------------------------------------------------------

#[test]
fn a_system_admin_registers_an_edge_node_for_a_hospital() {
    let mut f = Fixture::new();
    let node = NodeId::from_uuid(f.id());
    f.world.then(
        &f.admin,
        RegisterEdgeNode {
            node_id: node,
            hospital_id: f.hospital_b,
            public_key: node_key(7),
        },
        vec![
            EdgeNodeRegistered {
                node_id: node,
                hospital_id: f.hospital_b,
                public_key: node_key(7),
            }
            .into(),
        ],
    );
}

#[test]
fn a_hospital_admin_registers_an_edge_node_for_their_own_hospital() {
    let mut f = Fixture::new();
    let node = NodeId::from_uuid(f.id());
    f.world.ok(
        &f.hospital_admin,
        RegisterEdgeNode {
            node_id: node,
            hospital_id: f.hospital_a,
            public_key: node_key(7),
        },
    );
    let registered = f.world.store.edge_node(node).unwrap();
    assert_eq!(registered.hospital_id, f.hospital_a);
    assert_eq!(registered.public_key, node_key(7));
}

#[test]
fn a_hospital_admin_cannot_register_an_edge_node_for_another_hospital() {
    let mut f = Fixture::new();
    let node = NodeId::from_uuid(f.id());
    f.world.then_refused(
        &f.hospital_admin,
        RegisterEdgeNode {
            node_id: node,
            hospital_id: f.hospital_b,
            public_key: node_key(7),
        },
        Refused::Forbidden,
    );
}

#[test]
fn a_pharmacist_cannot_register_an_edge_node() {
    let mut f = Fixture::new();
    let node = NodeId::from_uuid(f.id());
    f.world.then_refused(
        &f.pharmacist,
        RegisterEdgeNode {
            node_id: node,
            hospital_id: f.hospital_a,
            public_key: node_key(7),
        },
        Refused::Forbidden,
    );
}

#[test]
fn an_edge_node_of_an_unknown_hospital_is_not_found() {
    let mut f = Fixture::new();
    let unknown = HospitalId::from_uuid(f.id());
    let node = NodeId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        RegisterEdgeNode {
            node_id: node,
            hospital_id: unknown,
            public_key: node_key(7),
        },
        Refused::NotFound(AggregateType::Hospital),
    );
}

#[test]
fn an_edge_node_cannot_be_registered_twice() {
    let mut f = Fixture::new();
    let node = NodeId::from_uuid(f.id());
    let register = |hospital_id, seed| RegisterEdgeNode {
        node_id: node,
        hospital_id,
        public_key: node_key(seed),
    };
    f.world.ok(&f.admin, register(f.hospital_a, 7));
    f.world
        .then_refused(&f.admin, register(f.hospital_b, 8), Refused::Conflict);
}

// --- MergePatients ---------------------------------------------------------------------

fn merge(merged: PatientId, into: PatientId) -> MergePatients {
    MergePatients {
        surviving_patient_id: into,
        merged_patient_id: merged,
    }
}

#[test]
fn a_system_admin_merges_a_duplicate_patient_into_its_survivor() {
    let f = Fixture::new();
    f.world.then(
        &f.admin,
        merge(f.other_patient, f.patient),
        vec![
            PatientMerged {
                merged_patient_id: f.other_patient,
                surviving_patient_id: f.patient,
                hospital_id: f.hospital_a,
            }
            .into(),
        ],
    );
}

#[test]
fn a_merged_patient_points_to_the_survivor_and_refuses_further_notes() {
    let mut f = Fixture::new();
    let (merged, survivor) = (f.other_patient, f.patient);
    f.world.ok(&f.hospital_admin, merge(merged, survivor));

    let record = f.world.store.patient(merged).unwrap();
    assert_eq!(record.merged_into, Some(survivor));
    let note = |patient_id| AddMedicalNote {
        patient_id,
        note: long("follow-up in two weeks"),
    };
    f.world
        .then_refused(&f.doctor, note(merged), Refused::Conflict);
    f.world.ok(&f.doctor, note(survivor));
}

#[test]
fn a_hospital_admin_cannot_merge_patients_of_another_hospital() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.hospital_admin,
        merge(f.b_patient, f.patient),
        Refused::Forbidden,
    );
}

#[test]
fn a_doctor_cannot_merge_patients() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.doctor,
        merge(f.other_patient, f.patient),
        Refused::Forbidden,
    );
}

#[test]
fn a_patient_cannot_be_merged_into_itself() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.admin,
        merge(f.patient, f.patient),
        Refused::Invalid("merged_patient_id"),
    );
}

#[test]
fn merging_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let unknown = PatientId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        merge(unknown, f.patient),
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn merging_into_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let unknown = PatientId::from_uuid(f.id());
    f.world.then_refused(
        &f.admin,
        merge(f.other_patient, unknown),
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn records_of_different_hospitals_cannot_be_merged() {
    let f = Fixture::new();
    f.world
        .then_refused(&f.admin, merge(f.b_patient, f.patient), Refused::Conflict);
}

#[test]
fn a_patient_cannot_be_merged_twice() {
    let mut f = Fixture::new();
    let (merged, survivor) = (f.other_patient, f.patient);
    f.world.ok(&f.admin, merge(merged, survivor));
    f.world
        .then_refused(&f.admin, merge(merged, survivor), Refused::Conflict);
}

#[test]
fn a_patient_cannot_be_merged_into_a_record_that_was_merged_away() {
    let mut f = Fixture::new();
    let (merged, survivor) = (f.other_patient, f.patient);
    f.world.ok(&f.admin, merge(merged, survivor));
    f.world
        .then_refused(&f.admin, merge(survivor, merged), Refused::Conflict);
}

#[test]
fn the_patient_role_cannot_be_assigned_to_an_account_without_a_patient_record() {
    let mut f = Fixture::new();
    let (admin, doctor) = (f.admin.clone(), f.doctor.user_id);
    f.world.ok(
        &admin,
        RevokeRole {
            user_id: doctor,
            role: Role::Doctor,
        },
    );
    f.world.then_refused(
        &admin,
        AssignRole {
            user_id: doctor,
            role: Role::Patient,
        },
        Refused::Invalid("role"),
    );
}

#[test]
fn a_patient_account_cannot_be_given_a_staff_role_even_after_losing_the_patient_role() {
    let mut f = Fixture::new();
    let (admin, patient_user) = (f.admin.clone(), f.patient_user.user_id);
    f.world.ok(
        &admin,
        RevokeRole {
            user_id: patient_user,
            role: Role::Patient,
        },
    );
    f.world.then_refused(
        &admin,
        AssignRole {
            user_id: patient_user,
            role: Role::Nurse,
        },
        Refused::Invalid("role"),
    );
}

#[test]
fn an_account_cannot_be_linked_to_a_merged_patient_record() {
    let mut f = Fixture::new();
    f.merge_other_patient();
    let mut cmd = new_user(
        UserId::from_uuid(uuid(0x777)),
        f.hospital_a,
        &[Role::Patient],
    );
    cmd.patient_id = Some(f.other_patient);
    f.world.then_refused(&f.admin, cmd, Refused::Conflict);
}
