//! Request and response bodies of the local API that are not model types.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectRequest {
    pub sandbox: String,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    pub aliases: Vec<String>,
    pub mac: Option<String>,
    pub ifname: Option<String>,
    pub routes: Vec<crate::model::Route>,
    pub no_default_route: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DisconnectRequest {
    pub sandbox: String,
}

/// Every error answer: `{"message": "..."}` with a 4xx/5xx status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub message: String,
}
