//! The `deployment_templates` repository. Names are unique among live templates; a template
//! that a live deployment was created from cannot be deleted.

use orch_core::Template;
use sqlx::Row;
use uuid::Uuid;

use crate::records::TEMPLATE_COLUMNS;
use crate::{now, timed, Page, Result, Store, StoreError, TemplateRecord};

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("documents always serialize")
}

fn duplicate_name(name: &str) -> StoreError {
    StoreError::Conflict(format!("a template named '{name}' already exists"))
}

impl Store {
    #[tracing::instrument(skip_all, fields(template = %template.name))]
    pub async fn create_template(&self, template: &Template) -> Result<TemplateRecord> {
        let id = Uuid::now_v7().to_string();
        let at = now();
        let network = &template.network_config;
        let query = sqlx::query(
            "INSERT INTO deployment_templates (id, name, description, vm_config, network_config, security_groups, key_pair, services, networks, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $10, 1, $8, $8)",
        )
        .bind(&id)
        .bind(&template.name)
        .bind(template.description.clone())
        .bind(json(&template.vm_config))
        .bind(json(network))
        .bind(json(&template.security_groups))
        .bind(template.key_pair.clone())
        .bind(&at)
        .bind(json(&template.services))
        .bind(json(&template.networks))
        .execute(self.pool());
        match timed("templates.insert", query).await {
            Ok(_) => {}
            Err(error) if StoreError::is_unique_violation(&error) => return Err(duplicate_name(&template.name)),
            Err(error) => return Err(error.into()),
        }
        Ok(TemplateRecord {
            id,
            template: template.clone(),
            version: 1,
            created_at: at.clone(),
            updated_at: at,
        })
    }

    /// A live template by id or, failing that, by name.
    #[tracing::instrument(skip(self))]
    pub async fn template(&self, id_or_name: &str) -> Result<TemplateRecord> {
        let sql = format!(
            "SELECT {TEMPLATE_COLUMNS} FROM deployment_templates \
             WHERE deleted_at IS NULL AND (id = $1 OR name = $1) \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        );
        let row = timed(
            "templates.get",
            sqlx::query(&sql).bind(id_or_name).fetch_optional(self.pool()),
        )
        .await?;
        match row {
            Some(row) => TemplateRecord::from_row(&row),
            None => Err(StoreError::NotFound(format!("template '{id_or_name}'"))),
        }
    }

    #[tracing::instrument(skip(self))]
    pub async fn templates(&self, limit: i64, offset: i64) -> Result<Page<TemplateRecord>> {
        let sql = format!(
            "SELECT {TEMPLATE_COLUMNS} FROM deployment_templates WHERE deleted_at IS NULL \
             ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
        );
        let rows = timed(
            "templates.list",
            sqlx::query(&sql).bind(limit).bind(offset).fetch_all(self.pool()),
        )
        .await?;
        let total: i64 = timed(
            "templates.count",
            sqlx::query("SELECT COUNT(*) AS total FROM deployment_templates WHERE deleted_at IS NULL")
                .fetch_one(self.pool()),
        )
        .await?
        .try_get("total")?;
        Ok(Page {
            items: rows.iter().map(TemplateRecord::from_row).collect::<Result<_>>()?,
            total,
        })
    }

    /// Replaces a live template's document and bumps its version. Deployments keep the
    /// snapshot they were created with.
    #[tracing::instrument(skip(self, template))]
    pub async fn replace_template(&self, id_or_name: &str, template: &Template) -> Result<TemplateRecord> {
        let current = self.template(id_or_name).await?;
        let at = now();
        let query = sqlx::query(
            "UPDATE deployment_templates SET name = $2, description = $3, vm_config = $4, network_config = $5, \
             security_groups = $6, key_pair = $7, services = $9, networks = $10, version = version + 1, updated_at = $8 \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(&current.id)
        .bind(&template.name)
        .bind(template.description.clone())
        .bind(json(&template.vm_config))
        .bind(json(&template.network_config))
        .bind(json(&template.security_groups))
        .bind(template.key_pair.clone())
        .bind(&at)
        .bind(json(&template.services))
        .bind(json(&template.networks))
        .execute(self.pool());
        match timed("templates.update", query).await {
            Ok(done) if done.rows_affected() == 1 => self.template(&current.id).await,
            Ok(_) => Err(StoreError::NotFound(format!("template '{id_or_name}'"))),
            Err(error) if StoreError::is_unique_violation(&error) => Err(duplicate_name(&template.name)),
            Err(error) => Err(error.into()),
        }
    }

    /// Soft-deletes a template unless a live deployment was created from it.
    #[tracing::instrument(skip(self))]
    pub async fn delete_template(&self, id_or_name: &str) -> Result<()> {
        let current = self.template(id_or_name).await?;
        let deleted = timed(
            "templates.delete",
            sqlx::query(
                "UPDATE deployment_templates SET deleted_at = $2, updated_at = $2 \
                 WHERE id = $1 AND deleted_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM deployments WHERE template_id = $1 AND deleted_at IS NULL)",
            )
            .bind(&current.id)
            .bind(now())
            .execute(self.pool()),
        )
        .await?;
        if deleted.rows_affected() == 1 {
            return Ok(());
        }
        let users: i64 = timed(
            "templates.users",
            sqlx::query("SELECT COUNT(*) AS users FROM deployments WHERE template_id = $1 AND deleted_at IS NULL")
                .bind(&current.id)
                .fetch_one(self.pool()),
        )
        .await?
        .try_get("users")?;
        if users > 0 {
            Err(StoreError::Conflict(format!(
                "template '{}' is used by {users} live deployment(s); delete them first",
                current.template.name
            )))
        } else {
            Err(StoreError::NotFound(format!("template '{id_or_name}'")))
        }
    }
}
