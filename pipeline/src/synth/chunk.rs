//! One chunk of the population: its people one after another, each table's rows from
//! that table's function, in the order of their draws (which fixes every seed's
//! output), then the chunk's invalid rows.

use super::World;
use super::events::{self, AppointmentRows, PrescriptionRows};
use super::invalid::invalid_rows;
use super::people::{self, OptoutRows, PatientRows, Person};
use super::services::{self, Service, ServiceEffects, ServiceRows};
use super::spells::{self, AdmissionRows, SpellContext};
use super::truth::{Truth, TruthSums};
use crate::error::Result;
use crate::ingest::contract::{self, Table, table_path};
use datafusion::arrow::array::RecordBatch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::LazyLock;

pub(super) struct ChunkOut {
    pub(super) people: u64,
    pub(super) truth: Truth,
    pub(super) patients: RecordBatch,
    pub(super) appointments: RecordBatch,
    pub(super) prescriptions: RecordBatch,
    pub(super) admissions: RecordBatch,
    pub(super) optouts: RecordBatch,
    pub(super) services: RecordBatch,
}

/// The tables of a chunk, in the order of `ChunkOut`'s fields.
pub(super) static TABLES: LazyLock<[&Table; 6]> = LazyLock::new(|| {
    [
        &contract::PATIENTS,
        &contract::APPOINTMENTS,
        &contract::PRESCRIPTIONS,
        &contract::ADMISSIONS,
        &contract::OPTOUTS,
        &contract::SERVICES,
    ]
});

impl ChunkOut {
    /// The tables written as one file for the whole population, with their batches.
    pub(super) fn whole_tables(&self) -> impl Iterator<Item = (&'static Table, &RecordBatch)> {
        self.tables().filter(|(t, _)| !in_parts(t))
    }

    /// The big event tables, written a file a chunk, with their batches.
    pub(super) fn part_tables(&self) -> impl Iterator<Item = (&'static Table, &RecordBatch)> {
        self.tables().filter(|(t, _)| in_parts(t))
    }

    fn tables(&self) -> impl Iterator<Item = (&'static Table, &RecordBatch)> {
        let batches = [
            &self.patients,
            &self.appointments,
            &self.prescriptions,
            &self.admissions,
            &self.optouts,
            &self.services,
        ];
        TABLES.into_iter().zip(batches)
    }
}

/// Whether a table is written a file a chunk (the big event tables) or whole.
pub(super) fn in_parts(t: &Table) -> bool {
    table_path(t.name).ends_with('/')
}

/// Each table's rows so far.
#[derive(Default)]
pub(super) struct Rows {
    pub(super) patients: PatientRows,
    pub(super) appointments: AppointmentRows,
    pub(super) prescriptions: PrescriptionRows,
    pub(super) admissions: AdmissionRows,
    pub(super) optouts: OptoutRows,
    pub(super) services: ServiceRows,
}

impl Rows {
    fn finish(mut self, people: u64, truth: Truth) -> Result<ChunkOut> {
        Ok(ChunkOut {
            people,
            truth,
            patients: self.patients.finish()?,
            appointments: self.appointments.finish()?,
            prescriptions: self.prescriptions.finish()?,
            admissions: self.admissions.finish()?,
            optouts: self.optouts.finish()?,
            services: self.services.finish()?,
        })
    }
}

/// People `first..first + n`, chunk `chunk` of the seed's streams.
pub(super) fn generate_chunk(
    world: &World,
    effects: &ServiceEffects,
    seed: u64,
    chunk: u64,
    first: u64,
    n: u64,
) -> Result<ChunkOut> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(chunk);
    // Services (enrolment, effects, the fourth year of spells) draw from their own
    // stream, so that changing them leaves everyone else's data as it was.
    let mut svc = ChaCha8Rng::seed_from_u64(seed);
    svc.set_stream(chunk | 1 << 40);
    let mut rows = Rows::default();
    let mut kept_patients = Vec::new();
    let mut truths: Vec<(String, Service, TruthSums)> = Vec::new();
    for i in first..first + n {
        let p = people::draw(world, &mut rng, i);
        if let Some((service, sums)) = events_of(&mut rows, world, effects, &p, &mut rng, &mut svc)
        {
            truths.push((p.row.id.clone(), service, sums));
        }
        kept_patients.push(p.row);
    }

    let duplicated = invalid_rows(&mut rows, &mut rng, &kept_patients, world, first, n);
    for p in &kept_patients {
        rows.patients.append(Some(&p.id), p);
    }
    // The truth is over the people a run can evaluate: no objectors, no duplicates.
    let mut truth = Truth::default();
    for (who, service, sums) in truths {
        if !duplicated.contains(&who) {
            truth.add(service, &sums);
        }
    }
    rows.finish(n, truth)
}

/// A person's rows in every table but `patients`; the truth about their service
/// unless they opted out.
fn events_of(
    rows: &mut Rows,
    world: &World,
    effects: &ServiceEffects,
    p: &Person,
    rng: &mut ChaCha8Rng,
    svc: &mut ChaCha8Rng,
) -> Option<(Service, TruthSums)> {
    let a = world.as_of;
    events::appointments(&mut rows.appointments, rng, p, a);
    events::prescriptions(&mut rows.prescriptions, rng, p, world);
    let ctx = SpellContext::new(world, p);
    let (mut spells, need_y3) = spells::history(&ctx, p, rng, svc);
    services::retired_draws(rng, p, a);
    let truth = services::services(
        &mut rows.services,
        svc,
        &ctx,
        effects,
        p,
        need_y3,
        &mut spells,
    );
    spells::admissions(&mut rows.admissions, &p.row.id, &spells);
    let opted_out = people::optouts(&mut rows.optouts, rng, &p.row.id, a);
    truth.filter(|_| !opted_out)
}
