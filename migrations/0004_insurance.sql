-- The insurance read model: insurers; plans with their pricing and coverage terms and every
-- change to them; claims with their amounts, lines and status, and every decision on them, per
-- insurer and per hospital. Rows hold only what the events say (times are the envelopes'
-- occurred_at), so a rebuild gives the same tables. No foreign keys, sequences or triggers:
-- a rebuild copies each table with LIKE. History tables keep `stream_seq` for their order.

CREATE SCHEMA IF NOT EXISTS insurance;

CREATE TABLE insurance.insurers (
    insurer_id    uuid PRIMARY KEY,
    name          text NOT NULL,
    registered_at timestamptz NOT NULL
);

-- coverage is the list of terms as the events carry it: [{service_code, percent, cap_cents}].
CREATE TABLE insurance.plans (
    plan_id       uuid PRIMARY KEY,
    insurer_id    uuid NOT NULL,
    name          text NOT NULL,
    currency      text NOT NULL,
    premium_cents bigint NOT NULL,
    coverage      jsonb NOT NULL,
    published_at  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX plans_by_insurer ON insurance.plans (insurer_id);

-- One row per PlanPublished or PlanTermsUpdated; a column an update leaves alone is null.
CREATE TABLE insurance.plan_changes (
    event_id      uuid PRIMARY KEY,
    stream_seq    bigint NOT NULL,
    plan_id       uuid NOT NULL,
    insurer_id    uuid NOT NULL,
    event_type    text NOT NULL,
    name          text,
    currency      text,
    premium_cents bigint,
    coverage      jsonb,
    occurred_at   timestamptz NOT NULL
);
CREATE INDEX plan_changes_by_plan ON insurance.plan_changes (plan_id, stream_seq);

-- The first decision stands: status, approved_cents, rejection_reason, decided_* come from it.
CREATE TABLE insurance.claims (
    claim_id         uuid PRIMARY KEY,
    hospital_id      uuid NOT NULL,
    insurer_id       uuid NOT NULL,
    plan_id          uuid NOT NULL,
    invoice_id       uuid NOT NULL,
    patient_id       uuid NOT NULL,
    member_id        text NOT NULL,
    currency         text NOT NULL,
    claimed_cents    bigint NOT NULL,
    lines            jsonb NOT NULL,
    status           text NOT NULL,
    approved_cents   bigint,
    rejection_reason text,
    decided_by       uuid,
    submitted_at     timestamptz NOT NULL,
    decided_at       timestamptz
);
CREATE INDEX claims_by_insurer ON insurance.claims (insurer_id, submitted_at);
CREATE INDEX claims_by_hospital ON insurance.claims (hospital_id, submitted_at);

-- One row per ClaimApproved, ClaimRejected or ClaimAmendmentRejected; `applied` says whether it
-- decided the claim (a decision after the first does not).
CREATE TABLE insurance.claim_decisions (
    event_id            uuid PRIMARY KEY,
    stream_seq          bigint NOT NULL,
    claim_id            uuid NOT NULL,
    hospital_id         uuid NOT NULL,
    insurer_id          uuid NOT NULL,
    event_type          text NOT NULL,
    approved_cents      bigint,
    reason              text,
    decided_by          uuid,
    rejected_event_id   uuid,
    rejected_event_type text,
    applied             boolean NOT NULL,
    occurred_at         timestamptz NOT NULL
);
CREATE INDEX claim_decisions_by_claim ON insurance.claim_decisions (claim_id, stream_seq);
CREATE INDEX claim_decisions_by_insurer ON insurance.claim_decisions (insurer_id, occurred_at);
