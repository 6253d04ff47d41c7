//! Events (I/O): one way to publish a Kubernetes Event, shared by apply and healing.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Publishes an Event about `reference` (the note cut to 1,000 characters). An Event is a
/// courtesy: failing to publish one never fails the change itself.
pub async fn publish_event(
    recorder: &Recorder,
    type_: EventType,
    reason: &str,
    note: &str,
    reference: &ObjectReference,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: reason.into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, reference).await {
        tracing::debug!(%error, "Could not publish an Event.");
    }
}
