//! Indicators (file copies to removable media or watched folders) of users the policy covers:
//! reported to the console, which may issue a trigger; when the console cannot be told, the
//! policy's local rule for the kind opens the clip on the device.

use super::*;

impl Daemon {
    pub(super) fn activity(&mut self, a: Activity) {
        self.indicators_seen += 1;
        let now = now();
        let accounts = self.opts.config.local_accounts();
        let Some(scope) =
            self.policy_payload().and_then(|p| p.approved_account(accounts, &a.user, now))
        else {
            // Users outside the policy are not reported: no approval, no evidence.
            return;
        };
        let principal = scope.principal.as_str().to_string();
        let event = ActivityEvent {
            user: principal.clone(),
            kind: a.kind.into(),
            time_ms: UnixMillis(a.at_utc_micros / 1000),
            details: serde_json::json!({
                "file": a.file,
                "size": a.size,
                "destination": a.destination,
            }),
        };
        let up = self.uploader.clone();
        let tx = self.completed_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = up.report_activity(vec![event]).await {
                tracing::info!(error = %e, "indicator not reported; applying local rules");
                let _ = tx.send(Completed::IndicatorUnreported { activity: a, principal });
            }
        });
    }

    /// The console could not be told about `a`: the policy's local rule for its kind, if
    /// any, opens the clip here.
    pub(super) async fn open_offline_clip(&mut self, a: &Activity, principal: String) {
        let rule = self.policy_payload().and_then(|p| p.indicator(a.kind)).cloned();
        if let Some(rule) = rule {
            let reason = format!("{}: {} (opened offline)", a.kind.describe(), a.file);
            let before = i64::from(rule.before_secs) * 1_000_000;
            let after = i64::from(rule.after_secs) * 1_000_000;
            let window = ClipWindow {
                from_utc_micros: a.at_utc_micros - before,
                to_utc_micros: a.at_utc_micros + after,
            };
            self.hand_to_store(store::Job::OpenClip { user: principal, reason, window }).await;
        }
    }
}
