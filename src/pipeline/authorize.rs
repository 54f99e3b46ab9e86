//! Authorization: what an authenticated principal may do with the request
//! it sent. The model allow-list (names and globs), data residency (a team
//! with `regions` only reaches upstreams in those regions; when none of a
//! model's targets qualifies the request is refused here, while route
//! selection skips the forbidden targets and fallbacks), and the agent
//! tool policy on the tools a request offers.

use super::auth::Principal;
use crate::api::GatewayError;
use crate::config::snapshot::{ModelRef, Snapshot};

/// Position of a client-facing model name in the snapshot's name list
/// (models first, then experiments), as `Team::allowed_slots` indexes it.
pub fn slot(snapshot: &Snapshot, model: ModelRef) -> usize {
    match model {
        ModelRef::Model(i) => i,
        ModelRef::Experiment(e) => snapshot.models.len() + e,
    }
}

/// The name the client sent for `model`.
pub fn client_name(snapshot: &Snapshot, model: ModelRef) -> &str {
    snapshot
        .access
        .names
        .get(slot(snapshot, model))
        .map_or("", |n| &**n)
}

/// May `principal` use `model`, and does it reach an upstream in one of
/// the team's regions?
pub fn model(
    principal: &Principal,
    snapshot: &Snapshot,
    model: ModelRef,
    name: &str,
) -> Result<(), GatewayError> {
    let team = &principal.team;
    if !team.may_use_slot(slot(snapshot, model)) {
        return Err(GatewayError::ModelNotAllowed(name.to_owned()));
    }
    if team.regions.is_some() {
        let reachable = |m: usize| {
            snapshot.models[m]
                .targets
                .iter()
                .any(|&u| team.region_allowed(snapshot.upstreams[u].region.as_deref()))
        };
        let ok = match model {
            ModelRef::Model(i) => reachable(i),
            ModelRef::Experiment(e) => snapshot.experiments[e]
                .variants
                .iter()
                .any(|&(m, _)| reachable(m)),
        };
        if !ok {
            return Err(GatewayError::RegionNotAllowed(name.to_owned()));
        }
    }
    Ok(())
}
