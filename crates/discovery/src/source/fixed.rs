//! Static endpoints from configuration: one set, then nothing ever changes.

use crate::{Discovered, Source, SourceError};

/// A fixed endpoint set.
#[derive(Clone, Debug)]
pub struct StaticSource {
    endpoints: Option<Vec<Discovered>>,
}

impl StaticSource {
    pub fn new(endpoints: Vec<Discovered>) -> Self {
        Self {
            endpoints: Some(endpoints),
        }
    }
}

impl Source for StaticSource {
    fn describe(&self) -> String {
        "static".to_owned()
    }

    async fn next(&mut self) -> Result<Vec<Discovered>, SourceError> {
        match self.endpoints.take() {
            Some(eps) => Ok(eps),
            // The set never changes again.
            None => std::future::pending().await,
        }
    }
}
