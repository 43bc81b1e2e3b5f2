//! The gateway: `GET /products/{sku}` over HTTP (axum), answered from the
//! catalog service.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use serde::{Deserialize, Serialize};
use switchyard::Context;
use tokio::time::Instant;

use crate::pb::{GetProductRequest, catalog_client::CatalogClient};

/// The deadline the gateway gives each request, for all the hops behind
/// it (a shorter one from the caller wins).
pub const BUDGET: Duration = Duration::from_millis(800);

/// What `GET /products/{sku}` answers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub price_cents: u64,
    pub currency: String,
    pub gateway: String,
    pub catalog: String,
    pub pricing: String,
    /// What was left of the gateway's deadline at pricing, in ms (-1: none
    /// arrived).
    pub pricing_deadline_ms: i64,
}

#[derive(Clone, Debug)]
struct Gateway {
    id: String,
    catalog: switchyard::Client,
}

/// The gateway's routes, as the instance `id` calling the catalog through
/// `catalog`.
pub fn router(id: &str, catalog: switchyard::Client) -> Router {
    Router::new()
        .route("/products/{sku}", get(product))
        .with_state(Gateway {
            id: id.to_owned(),
            catalog,
        })
}

async fn product(
    State(gateway): State<Gateway>,
    Path(sku): Path<String>,
) -> Result<Json<ProductView>, (StatusCode, String)> {
    // The request's deadline: the caller's if it sent a shorter one.
    let context = Context::current().unwrap_or_default();
    let budget = Instant::now() + BUDGET;
    let deadline = context.deadline().map_or(budget, |d| d.min(budget));
    let call = async {
        CatalogClient::new(gateway.catalog.grpc())
            .get_product(GetProductRequest { sku })
            .await
    };
    let product = context
        .with_deadline(deadline)
        .scope(call)
        .await
        .map_err(|status| (http_status(status.code()), status.message().to_owned()))?
        .into_inner();
    let price = product.price.unwrap_or_default();
    Ok(Json(ProductView {
        sku: product.sku,
        name: product.name,
        price_cents: price.cents,
        currency: price.currency,
        gateway: gateway.id,
        catalog: product.served_by,
        pricing: price.served_by,
        pricing_deadline_ms: price.remaining_deadline_ms,
    }))
}

/// gRPC's status codes as HTTP ones, as gRPC's HTTP mapping does.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::ResourceExhausted | Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}
