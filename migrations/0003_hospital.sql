-- The hospital read model: organisations, users and edge nodes; patients with their medical
-- record; appointments, prescriptions, pharmacy stock, lab orders, invoices and payments; and
-- every conflict answer. Every row names its tenant (hospital_id, or org_id where the row may
-- belong to another kind of organisation) and holds only what the events say: the times are
-- the envelopes' occurred_at, nothing comes from a clock or a default, so a rebuild gives the
-- same tables. No foreign keys, sequences or triggers: a rebuild copies each table with LIKE.
-- History tables (one row per event, keyed by event_id) keep `stream_seq` for their order.

CREATE SCHEMA IF NOT EXISTS hospital;

CREATE TABLE hospital.hospitals (
    hospital_id   uuid PRIMARY KEY,
    name          text NOT NULL,
    region_code   text NOT NULL,
    registered_at timestamptz NOT NULL
);

-- Never the password hash.
CREATE TABLE hospital.users (
    user_id       uuid PRIMARY KEY,
    org_id        uuid NOT NULL,
    username      text NOT NULL,
    display_name  text NOT NULL,
    roles         text[] NOT NULL,
    active        boolean NOT NULL,
    patient_id    uuid,
    registered_at timestamptz NOT NULL,
    last_event_at timestamptz NOT NULL
);
CREATE INDEX users_by_org ON hospital.users (org_id);

CREATE TABLE hospital.edge_nodes (
    node_id       uuid PRIMARY KEY,
    hospital_id   uuid NOT NULL,
    registered_at timestamptz NOT NULL
);
CREATE INDEX edge_nodes_by_hospital ON hospital.edge_nodes (hospital_id);

-- Details merge per field (later occurred_at wins, ties by node_id): field_stamps holds, per
-- field, the [occurred_at, node_id] of the edit that set it, so a later batch can go on
-- merging. last_event_at is the latest occurred_at of any of its events (order-independent).
CREATE TABLE hospital.patients (
    patient_id    uuid PRIMARY KEY,
    hospital_id   uuid NOT NULL,
    name          text NOT NULL,
    birth_date    date NOT NULL,
    sex           text NOT NULL,
    national_id   text,
    phone         text,
    region_code   text,
    field_stamps  jsonb NOT NULL,
    merged_into   uuid,
    merged_at     timestamptz,
    diagnoses     integer NOT NULL,
    notes         integer NOT NULL,
    registered_at timestamptz NOT NULL,
    last_event_at timestamptz NOT NULL
);
CREATE INDEX patients_by_hospital ON hospital.patients (hospital_id);
CREATE INDEX patients_by_national_id ON hospital.patients (hospital_id, national_id);

-- Every details edit as recorded, whether or not each field won.
CREATE TABLE hospital.patient_edits (
    event_id    uuid PRIMARY KEY,
    stream_seq  bigint NOT NULL,
    patient_id  uuid NOT NULL,
    hospital_id uuid NOT NULL,
    node_id     uuid NOT NULL,
    changes     jsonb NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX patient_edits_by_patient ON hospital.patient_edits (patient_id, stream_seq);

CREATE TABLE hospital.diagnoses (
    event_id       uuid PRIMARY KEY,
    stream_seq     bigint NOT NULL,
    patient_id     uuid NOT NULL,
    hospital_id    uuid NOT NULL,
    icd10_code     text NOT NULL,
    description    text NOT NULL,
    appointment_id uuid,
    doctor_id      uuid NOT NULL,
    occurred_at    timestamptz NOT NULL
);
CREATE INDEX diagnoses_by_patient ON hospital.diagnoses (patient_id, stream_seq);
CREATE INDEX diagnoses_by_hospital ON hospital.diagnoses (hospital_id, occurred_at);

CREATE TABLE hospital.notes (
    event_id    uuid PRIMARY KEY,
    stream_seq  bigint NOT NULL,
    patient_id  uuid NOT NULL,
    hospital_id uuid NOT NULL,
    note        text NOT NULL,
    author_id   uuid NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX notes_by_patient ON hospital.notes (patient_id, stream_seq);

-- status follows the domain's transitions; status_at is when the transition that set it
-- occurred.
CREATE TABLE hospital.appointments (
    appointment_id   uuid PRIMARY KEY,
    hospital_id      uuid NOT NULL,
    patient_id       uuid NOT NULL,
    doctor_id        uuid NOT NULL,
    starts_at        timestamptz NOT NULL,
    duration_minutes integer NOT NULL,
    reason           text NOT NULL,
    booked_by        uuid NOT NULL,
    status           text NOT NULL,
    booked_at        timestamptz NOT NULL,
    status_at        timestamptz NOT NULL
);
CREATE INDEX appointments_by_hospital ON hospital.appointments (hospital_id, starts_at);
CREATE INDEX appointments_by_patient ON hospital.appointments (patient_id);
CREATE INDEX appointments_by_doctor ON hospital.appointments (doctor_id, starts_at);

-- Every event of an appointment; `applied` says whether it changed the appointment (a late
-- transition on a closed one does not), `status` is the status after it.
CREATE TABLE hospital.appointment_history (
    event_id       uuid PRIMARY KEY,
    stream_seq     bigint NOT NULL,
    appointment_id uuid NOT NULL,
    hospital_id    uuid NOT NULL,
    event_type     text NOT NULL,
    applied        boolean NOT NULL,
    status         text,
    detail         jsonb NOT NULL,
    occurred_at    timestamptz NOT NULL
);
CREATE INDEX appointment_history_by_appointment
    ON hospital.appointment_history (appointment_id, stream_seq);

CREATE TABLE hospital.prescriptions (
    prescription_id uuid PRIMARY KEY,
    hospital_id     uuid NOT NULL,
    patient_id      uuid NOT NULL,
    appointment_id  uuid,
    doctor_id       uuid NOT NULL,
    items           jsonb NOT NULL,
    status          text NOT NULL,
    issued_at       timestamptz NOT NULL,
    dispensed_at    timestamptz,
    dispensed_by    uuid
);
CREATE INDEX prescriptions_by_hospital ON hospital.prescriptions (hospital_id, issued_at);
CREATE INDEX prescriptions_by_patient ON hospital.prescriptions (patient_id);

-- A stock item is one drug's stock at one hospital. Movements commute, so the balance is their
-- sum whatever the order; it may be negative (StockDiscrepancyFlagged answers that).
CREATE TABLE hospital.stock_items (
    stock_item_id uuid PRIMARY KEY,
    hospital_id   uuid NOT NULL,
    drug_code     text NOT NULL,
    name          text,
    balance       bigint NOT NULL,
    discrepancies integer NOT NULL,
    last_event_at timestamptz NOT NULL
);
CREATE INDEX stock_items_by_hospital ON hospital.stock_items (hospital_id, drug_code);

CREATE TABLE hospital.stock_movements (
    event_id        uuid PRIMARY KEY,
    stream_seq      bigint NOT NULL,
    stock_item_id   uuid NOT NULL,
    hospital_id     uuid NOT NULL,
    drug_code       text NOT NULL,
    event_type      text NOT NULL,
    delta           bigint NOT NULL,
    reason          text,
    batch           text,
    expires_on      date,
    prescription_id uuid,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX stock_movements_by_item ON hospital.stock_movements (stock_item_id, stream_seq);

-- The first result recorded stands; every result event is kept in lab_results.
CREATE TABLE hospital.lab_orders (
    lab_order_id   uuid PRIMARY KEY,
    hospital_id    uuid NOT NULL,
    patient_id     uuid NOT NULL,
    test_code      text NOT NULL,
    appointment_id uuid,
    ordered_by     uuid NOT NULL,
    ordered_at     timestamptz NOT NULL,
    result         text,
    abnormal       boolean,
    recorded_by    uuid,
    resulted_at    timestamptz
);
CREATE INDEX lab_orders_by_hospital ON hospital.lab_orders (hospital_id, ordered_at);
CREATE INDEX lab_orders_by_patient ON hospital.lab_orders (patient_id);

CREATE TABLE hospital.lab_results (
    event_id     uuid PRIMARY KEY,
    stream_seq   bigint NOT NULL,
    lab_order_id uuid NOT NULL,
    hospital_id  uuid NOT NULL,
    patient_id   uuid NOT NULL,
    result       text NOT NULL,
    abnormal     boolean NOT NULL,
    recorded_by  uuid NOT NULL,
    applied      boolean NOT NULL,
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX lab_results_by_order ON hospital.lab_results (lab_order_id, stream_seq);

CREATE TABLE hospital.invoices (
    invoice_id      uuid PRIMARY KEY,
    hospital_id     uuid NOT NULL,
    patient_id      uuid NOT NULL,
    appointment_id  uuid,
    currency        text NOT NULL,
    lines           jsonb NOT NULL,
    total_cents     bigint NOT NULL,
    paid_cents      bigint NOT NULL,
    status          text NOT NULL,
    issued_at       timestamptz NOT NULL,
    last_payment_at timestamptz
);
CREATE INDEX invoices_by_hospital ON hospital.invoices (hospital_id, issued_at);
CREATE INDEX invoices_by_patient ON hospital.invoices (patient_id);

CREATE TABLE hospital.payments (
    event_id     uuid PRIMARY KEY,
    stream_seq   bigint NOT NULL,
    invoice_id   uuid NOT NULL,
    hospital_id  uuid NOT NULL,
    amount_cents bigint NOT NULL,
    method       text NOT NULL,
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX payments_by_invoice ON hospital.payments (invoice_id, stream_seq);

-- Every conflict answer: AppointmentConflictDetected, DuplicatePatientSuspected,
-- StockDiscrepancyFlagged, TransitionRejected, ClaimAmendmentRejected; detail is the payload.
CREATE TABLE hospital.conflicts (
    event_id       uuid PRIMARY KEY,
    stream_seq     bigint NOT NULL,
    org_id         uuid NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   uuid NOT NULL,
    event_type     text NOT NULL,
    detail         jsonb NOT NULL,
    occurred_at    timestamptz NOT NULL
);
CREATE INDEX conflicts_by_org ON hospital.conflicts (org_id, occurred_at);
CREATE INDEX conflicts_by_aggregate ON hospital.conflicts (aggregate_type, aggregate_id);
