-- The public-health read model: counts of diagnoses by ISO week, region, ICD-10 category
-- (three characters), age band and sex, and the distinct patients behind them as keyed
-- pseudonyms. No direct identifier of any kind: no name, national id, phone, patient id,
-- birth date or free text. Suppression of small counts is applied where the data leaves (the
-- query API and the public stream), not here.

CREATE SCHEMA IF NOT EXISTS public_health;

CREATE TABLE public_health.cases (
    iso_week    text NOT NULL,
    region_code text NOT NULL,
    category    text NOT NULL,
    age_band    text NOT NULL,
    sex         text NOT NULL,
    cases       bigint NOT NULL CHECK (cases > 0),
    PRIMARY KEY (iso_week, region_code, category, age_band, sex)
);

-- One row per distinct patient in a cell: the patient as an HMAC pseudonym under a key only
-- the projector holds, so it can be counted but neither reversed nor joined elsewhere.
CREATE TABLE public_health.patients_seen (
    iso_week    text NOT NULL,
    region_code text NOT NULL,
    category    text NOT NULL,
    age_band    text NOT NULL,
    sex         text NOT NULL,
    pseudonym   text NOT NULL,
    PRIMARY KEY (iso_week, region_code, category, age_band, sex, pseudonym)
);

-- What the projector must remember to place a diagnosis in its cell, kept out of the public
-- schema: the patient's birth date, sex and region, by pseudonym, and each hospital's region.
CREATE SCHEMA IF NOT EXISTS public_health_keys;

CREATE TABLE public_health_keys.patients (
    pseudonym   text PRIMARY KEY,
    birth_date  date NOT NULL,
    sex         text NOT NULL,
    region_code text
);

CREATE TABLE public_health_keys.hospitals (
    hospital_id uuid PRIMARY KEY,
    region_code text NOT NULL
);
