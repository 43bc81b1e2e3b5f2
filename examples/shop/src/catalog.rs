//! The catalog service: a product per SKU, priced by the pricing service.

use tonic::{Request, Response, Status};

use crate::pb::{
    GetPriceRequest, GetProductRequest, Product, catalog_server, pricing_client::PricingClient,
};

/// Answers `GetProduct` as the instance `id`, calling pricing through
/// `pricing` (a library client following the registry).
#[derive(Clone, Debug)]
pub struct CatalogService {
    id: String,
    pricing: switchyard::Client,
}

impl CatalogService {
    pub fn new(id: &str, pricing: switchyard::Client) -> Self {
        Self {
            id: id.to_owned(),
            pricing,
        }
    }

    pub fn into_server(self) -> catalog_server::CatalogServer<Self> {
        catalog_server::CatalogServer::new(self)
    }
}

#[tonic::async_trait]
impl catalog_server::Catalog for CatalogService {
    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let sku = request.into_inner().sku;
        // No deadline code here: the call inherits what is left of the
        // caller's (the handler runs under the server's context).
        let price = PricingClient::new(self.pricing.grpc())
            .get_price(GetPriceRequest { sku: sku.clone() })
            .await?
            .into_inner();
        Ok(Response::new(Product {
            name: format!("Product {sku}"),
            sku,
            price: Some(price),
            served_by: self.id.clone(),
        }))
    }
}
