//! The pricing service: a price per SKU, and what was left of the caller's
//! deadline when the call arrived.

use std::time::Duration;

use switchyard::Context;
use tonic::{Request, Response, Status};

use crate::pb::{GetPriceRequest, Price, pricing_server};

/// Answers `GetPrice` as the instance `id`.
#[derive(Clone, Debug)]
pub struct PricingService {
    id: String,
}

impl PricingService {
    pub fn new(id: &str) -> Self {
        Self { id: id.to_owned() }
    }

    pub fn into_server(self) -> pricing_server::PricingServer<Self> {
        pricing_server::PricingServer::new(self)
    }
}

/// A stable price for a SKU, from 0.99 to 100.98.
pub fn price_of(sku: &str) -> u64 {
    let hash = sku.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    99 + hash % 10_000
}

#[tonic::async_trait]
impl pricing_server::Pricing for PricingService {
    async fn get_price(
        &self,
        request: Request<GetPriceRequest>,
    ) -> Result<Response<Price>, Status> {
        // The deadline the gateway set, less the time the hops before took.
        let remaining = Context::current().and_then(|c| c.remaining());
        let sku = request.into_inner().sku;
        if sku.is_empty() {
            return Err(Status::invalid_argument("sku is empty"));
        }
        // A little work, so that requests overlap and a drain has some in
        // flight.
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(Response::new(Price {
            cents: price_of(&sku),
            sku,
            currency: "EUR".to_owned(),
            served_by: self.id.clone(),
            remaining_deadline_ms: remaining
                .map_or(-1, |r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX)),
        }))
    }
}
