//! The stock item aggregate: one hospital's stock of one drug (its id derives from both, see
//! [`StockItemId::for_drug`]). Movements commute and are all kept; locally a movement that would
//! take the balance below zero is refused, and centrally a negative balance (from movements of
//! several sites) raises `StockDiscrepancyFlagged`.

use crate::command::{AdjustStock, ReceiveStock};
use crate::decide::Ctx;
use crate::event::*;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StockItem {
    pub stock_item_id: StockItemId,
    pub hospital_id: HospitalId,
    pub drug_code: DrugCode,
    /// The name from the first receipt; unknown if a site dispensed before any receipt arrived.
    pub name: Option<Name>,
    pub balance: i64,
    pub discrepancies: u32,
}

pub fn receive(c: &ReceiveStock, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    let hospital_id = ctx.acting_hospital()?;
    let stock_item_id = StockItemId::for_drug(hospital_id, &c.drug_code);
    Ok(vec![
        StockReceived {
            stock_item_id,
            hospital_id,
            drug_code: c.drug_code.clone(),
            name: c.name.clone(),
            quantity: c.quantity,
            batch: c.batch.clone(),
            expires_on: c.expires_on,
        }
        .into(),
    ])
}

pub fn adjust(c: &AdjustStock, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    let hospital_id = ctx.acting_hospital()?;
    let stock_item_id = StockItemId::for_drug(hospital_id, &c.drug_code);
    let item = ctx
        .facts
        .stock_item(stock_item_id)
        .ok_or_else(|| Rejection::not_found(AggregateType::StockItem, stock_item_id))?;
    let after = item.balance + c.delta.get();
    if after < 0 {
        return Err(Rejection::conflict(format!(
            "{} has {} on hand; adjusting by {} would leave {after}",
            c.drug_code,
            item.balance,
            c.delta.get()
        )));
    }
    Ok(vec![
        StockAdjusted {
            stock_item_id,
            hospital_id,
            drug_code: c.drug_code.clone(),
            delta: c.delta,
            reason: c.reason.clone(),
        }
        .into(),
    ])
}

/// How an event moves the balance (0 for events that do not).
pub fn movement(event: &Event) -> i64 {
    match event {
        Event::StockReceived(e) => i64::from(e.quantity.get()),
        Event::StockAdjusted(e) => e.delta.get(),
        Event::StockDispensed(e) => -i64::from(e.quantity.get()),
        _ => 0,
    }
}

pub fn evolve(state: Option<StockItem>, event: &Event, _stamp: &Stamp) -> Option<StockItem> {
    let (stock_item_id, hospital_id, drug_code) = match event {
        Event::StockReceived(e) => (e.stock_item_id, e.hospital_id, &e.drug_code),
        Event::StockAdjusted(e) => (e.stock_item_id, e.hospital_id, &e.drug_code),
        Event::StockDispensed(e) => (e.stock_item_id, e.hospital_id, &e.drug_code),
        Event::StockDiscrepancyFlagged(e) => (e.stock_item_id, e.hospital_id, &e.drug_code),
        _ => return state,
    };
    let mut item = state.unwrap_or_else(|| StockItem {
        stock_item_id,
        hospital_id,
        drug_code: drug_code.clone(),
        name: None,
        balance: 0,
        discrepancies: 0,
    });
    item.balance += movement(event);
    match event {
        Event::StockReceived(e) if item.name.is_none() => item.name = Some(e.name.clone()),
        Event::StockDiscrepancyFlagged(_) => item.discrepancies += 1,
        _ => {}
    }
    Some(item)
}
