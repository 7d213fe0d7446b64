//! Request bodies for device writes: create (`goliothDevicesCreateBody`) and partial update
//! (`goliothDeviceUpdate`, sent with PATCH), GOLIOTH_API.md §4.1–4.2.

use serde_json::{Map, Value, json};

use super::error::GoliothError;
use super::types::{BlueprintId, CohortId, Device, TagId};

/// A device to create. Tags, blueprint and cohort must already exist in Golioth ("The tags,
/// blueprint and cohort must already have been created"); create missing tags first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewDevice {
    /// Unique per project.
    pub name: String,
    /// Unique per project. Empty: Golioth generates one (`<timestamp>-<slug of name>`).
    pub hardware_ids: Vec<String>,
    pub tag_ids: Vec<TagId>,
    pub blueprint_id: Option<BlueprintId>,
    pub cohort_id: Option<CohortId>,
}

impl NewDevice {
    pub fn named(name: impl Into<String>) -> Self {
        NewDevice {
            name: name.into(),
            ..NewDevice::default()
        }
    }

    pub fn to_json(&self) -> Result<Value, GoliothError> {
        if self.name.trim().is_empty() {
            return Err(GoliothError::InvalidInput("a device needs a name".into()));
        }
        let mut body = Map::new();
        body.insert("name".into(), json!(self.name));
        if !self.hardware_ids.is_empty() {
            body.insert("hardwareIds".into(), json!(self.hardware_ids));
        }
        // [PGT] always sends `tagIds`, empty or not.
        body.insert("tagIds".into(), ids(&self.tag_ids));
        if let Some(b) = &self.blueprint_id {
            body.insert("blueprintId".into(), json!(b.as_str()));
        }
        if let Some(c) = &self.cohort_id {
            body.insert("cohortId".into(), json!(c.as_str()));
        }
        Ok(Value::Object(body))
    }
}

fn ids<T: AsRef<str>>(items: &[T]) -> Value {
    Value::Array(items.iter().map(|i| json!(i.as_ref())).collect())
}

impl AsRef<str> for TagId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// A partial update sent with `PATCH` (only the fields set are sent). Sets are either replaced
/// (`tag_ids`, `hardware_ids`) or edited element-wise (`add_*`/`remove_*`), never both in one
/// request: what Golioth does with both is not documented.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceUpdate {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// Replace all hardware ids.
    pub hardware_ids: Option<Vec<String>>,
    pub add_hardware_ids: Vec<String>,
    pub remove_hardware_ids: Vec<String>,
    /// Replace all tags.
    pub tag_ids: Option<Vec<TagId>>,
    pub add_tag_ids: Vec<TagId>,
    pub remove_tag_ids: Vec<TagId>,
    /// `Some(None)` removes the blueprint: sent as `null`, as [PGT] does. (Whether `""` also
    /// works for `blueprintId` is UNCERTAIN; the OAS documents `""` only for `cohortId`.)
    pub blueprint_id: Option<Option<BlueprintId>>,
    /// `Some(None)` removes the device from its cohort: sent as `""`, as the OAS documents.
    pub cohort_id: Option<Option<CohortId>>,
}

impl DeviceUpdate {
    pub fn is_empty(&self) -> bool {
        *self == DeviceUpdate::default()
    }

    /// Whether `device`, as Golioth holds it, already shows every change of this update: how a
    /// `PATCH` whose answer was lost is judged by looking instead of guessing.
    pub fn is_applied_to(&self, device: &Device) -> bool {
        let same_set = |want: &[String], have: &[String]| {
            want.len() == have.len() && want.iter().all(|w| have.contains(w))
        };
        let tags: Vec<String> = device
            .tag_ids
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        let ids = |t: &[TagId]| t.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>();
        self.name
            .as_ref()
            .is_none_or(|n| device.name.as_ref() == Some(n))
            && self.enabled.is_none_or(|e| device.enabled == Some(e))
            && self
                .hardware_ids
                .as_ref()
                .is_none_or(|h| same_set(h, &device.hardware_ids))
            && self
                .add_hardware_ids
                .iter()
                .all(|h| device.hardware_ids.contains(h))
            && !self
                .remove_hardware_ids
                .iter()
                .any(|h| device.hardware_ids.contains(h))
            && self
                .tag_ids
                .as_ref()
                .is_none_or(|t| same_set(&ids(t), &tags))
            && ids(&self.add_tag_ids).iter().all(|t| tags.contains(t))
            && !ids(&self.remove_tag_ids).iter().any(|t| tags.contains(t))
            && self
                .blueprint_id
                .as_ref()
                .is_none_or(|b| b.as_ref() == device.blueprint_id.as_ref())
            && self
                .cohort_id
                .as_ref()
                .is_none_or(|c| c.as_ref() == device.cohort_id.as_ref())
    }

    pub fn to_json(&self) -> Result<Value, GoliothError> {
        let mixed = |replace: bool, add: usize, remove: usize| replace && (add + remove) > 0;
        if mixed(
            self.tag_ids.is_some(),
            self.add_tag_ids.len(),
            self.remove_tag_ids.len(),
        ) {
            return Err(GoliothError::InvalidInput(
                "replace tags with tagIds or edit them with addTagId/removeTagId, not both".into(),
            ));
        }
        if mixed(
            self.hardware_ids.is_some(),
            self.add_hardware_ids.len(),
            self.remove_hardware_ids.len(),
        ) {
            return Err(GoliothError::InvalidInput(
                "replace hardware ids or edit them element-wise, not both".into(),
            ));
        }
        let mut body = Map::new();
        if let Some(n) = &self.name {
            if n.trim().is_empty() {
                return Err(GoliothError::InvalidInput(
                    "a device name cannot be empty".into(),
                ));
            }
            body.insert("name".into(), json!(n));
        }
        if let Some(e) = self.enabled {
            body.insert("enabled".into(), json!(e));
        }
        if let Some(h) = &self.hardware_ids {
            body.insert("hardwareIds".into(), json!(h));
        }
        if !self.add_hardware_ids.is_empty() {
            body.insert("addHardwareId".into(), json!(self.add_hardware_ids));
        }
        if !self.remove_hardware_ids.is_empty() {
            body.insert("removeHardwareId".into(), json!(self.remove_hardware_ids));
        }
        if let Some(t) = &self.tag_ids {
            body.insert("tagIds".into(), ids(t));
        }
        if !self.add_tag_ids.is_empty() {
            body.insert("addTagId".into(), ids(&self.add_tag_ids));
        }
        if !self.remove_tag_ids.is_empty() {
            body.insert("removeTagId".into(), ids(&self.remove_tag_ids));
        }
        match &self.blueprint_id {
            Some(Some(b)) => {
                body.insert("blueprintId".into(), json!(b.as_str()));
            }
            Some(None) => {
                body.insert("blueprintId".into(), Value::Null);
            }
            None => {}
        }
        match &self.cohort_id {
            Some(Some(c)) => {
                body.insert("cohortId".into(), json!(c.as_str()));
            }
            Some(None) => {
                body.insert("cohortId".into(), json!(""));
            }
            None => {}
        }
        Ok(Value::Object(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> TagId {
        TagId::parse(s).unwrap()
    }

    #[test]
    fn create_body() {
        let d = NewDevice {
            name: "dev-1".into(),
            hardware_ids: vec!["hw-1".into()],
            tag_ids: vec![tag("t1")],
            blueprint_id: None,
            cohort_id: Some(CohortId::parse("c").unwrap()),
        };
        assert_eq!(
            d.to_json().unwrap(),
            json!({"name": "dev-1", "hardwareIds": ["hw-1"], "tagIds": ["t1"], "cohortId": "c"})
        );
        assert_eq!(
            NewDevice::named("x").to_json().unwrap(),
            json!({"name": "x", "tagIds": []})
        );
        assert!(NewDevice::named(" ").to_json().is_err());
    }

    #[test]
    fn patch_body_sends_only_what_is_set() {
        let u = DeviceUpdate {
            enabled: Some(false),
            add_tag_ids: vec![tag("t1")],
            remove_tag_ids: vec![tag("t2")],
            blueprint_id: Some(None),
            cohort_id: Some(None),
            ..DeviceUpdate::default()
        };
        assert_eq!(
            u.to_json().unwrap(),
            json!({"enabled": false, "addTagId": ["t1"], "removeTagId": ["t2"],
                   "blueprintId": null, "cohortId": ""})
        );
        assert_eq!(DeviceUpdate::default().to_json().unwrap(), json!({}));
        assert!(DeviceUpdate::default().is_empty());
    }

    #[test]
    fn replace_and_edit_do_not_mix() {
        let u = DeviceUpdate {
            tag_ids: Some(vec![]),
            add_tag_ids: vec![tag("t1")],
            ..DeviceUpdate::default()
        };
        assert!(u.to_json().is_err());
        let u = DeviceUpdate {
            hardware_ids: Some(vec!["a".into()]),
            remove_hardware_ids: vec!["b".into()],
            ..DeviceUpdate::default()
        };
        assert!(u.to_json().is_err());
    }
}
