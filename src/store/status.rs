//! The status columns as enums. Each variant keeps the exact string the database has always held (no migration):
//! strum gives `as_str`/`Display`/`FromStr`, serde the same strings in JSON, and the sqlx impls let a status be
//! bound (`.bind(PageStatus::Ok)`) and read (`row.try_get::<PageStatus, _>`, `#[derive(sqlx::FromRow)]`) through
//! the `Any` pool. An unknown string in the database is a decode error, not a silent default.
//!
//! A status compares equal to its string (`row.page_status == "ok"`), for tests and JSON-minded callers.

/// Declares the sqlx `Any` impls, `as_str` and string comparisons for a strum/serde status enum.
macro_rules! db_enum {
    ($t:ty) => {
        impl $t {
            /// The string stored in the database (and shown in JSON and logs).
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        impl sqlx::Type<sqlx::Any> for $t {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<sqlx::Any>>::type_info()
            }

            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $t {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $t {
            fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <String as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
                s.parse::<$t>().map_err(|_| format!("unknown {} {s:?} in the database", stringify!($t)).into())
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// The strum and serde derives every status shares (snake_case strings).
macro_rules! status_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            serde::Serialize, serde::Deserialize,
            strum::EnumString, strum::AsRefStr, strum::Display, strum::IntoStaticStr,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),* }
        db_enum!($name);
    };
}

status_enum! {
    /// `articles.page_status`: where an article's full-text page stands.
    pub enum PageStatus {
        /// The source does not fetch pages (`full_text = false`): the feed text is the article.
        #[serde(rename = "none")]
        #[strum(serialize = "none")]
        NoPage,
        /// Still to fetch (never embedded or analysed while pending).
        Pending,
        /// Fetched and read.
        Ok,
        /// Given up on (the feed text stays).
        Failed,
    }
}

status_enum! {
    /// `notifications.status`: a message in the outbox.
    pub enum NotificationStatus {
        Pending,
        Delivered,
        /// Dead-lettered: kept for inspection and `notify --requeue`, never sent again.
        Dead,
    }
}

status_enum! {
    /// `sources.last_status`: how the last feed fetch ended.
    pub enum FetchStatus {
        Fetched,
        NotModified,
        Failed,
    }
}

status_enum! {
    /// `job_runs.outcome`: how a daemon job run ended (`running` while it runs).
    pub enum RunOutcome {
        Running,
        Ok,
        Failed,
        Timeout,
        Panicked,
        /// Did not start (overlap, low disk space).
        Skipped,
        /// Cut off by a crash, a kill or the end of the shutdown grace period.
        Interrupted,
    }
}

status_enum! {
    /// `reload_events.outcome`: what a schedule reload did.
    pub enum ReloadStatus {
        Applied,
        /// Some jobs could not be added or changed; the rest applied.
        Partial,
        /// Nothing applied: a failure rolled the schedule back.
        RolledBack,
        /// The edit was invalid; the previous schedule keeps running.
        Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_keep_the_database_strings() {
        let page = [PageStatus::NoPage, PageStatus::Pending, PageStatus::Ok, PageStatus::Failed];
        assert_eq!(page.map(PageStatus::as_str), ["none", "pending", "ok", "failed"]);
        for p in page {
            assert_eq!(p.as_str().parse::<PageStatus>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(FetchStatus::NotModified.as_str(), "not_modified");
        assert_eq!(ReloadStatus::RolledBack.as_str(), "rolled_back");
        assert_eq!(RunOutcome::Interrupted, "interrupted");
        assert_eq!(NotificationStatus::Dead.as_ref(), "dead");
        assert!("sent".parse::<NotificationStatus>().is_err());
        // The filters written as literals (to match partial indexes) name the same strings.
        assert_eq!(super::super::articles::PENDING_PAGE, format!("page_status = '{}'", PageStatus::Pending));
        assert_eq!(super::super::daemon::RUNNING, format!("outcome = '{}'", RunOutcome::Running));
    }

    #[tokio::test]
    async fn statuses_bind_and_decode_through_the_any_pool() {
        use sqlx::Row;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = super::super::Store::open(&url, 1, std::time::Duration::from_secs(5)).await.unwrap();
        let row = sqlx::query("SELECT $1 AS s, 'not_modified' AS f, NULL AS n, 'bogus' AS b")
            .bind(PageStatus::NoPage)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(row.try_get::<PageStatus, _>("s").unwrap(), PageStatus::NoPage);
        assert_eq!(row.try_get::<FetchStatus, _>("f").unwrap(), FetchStatus::NotModified);
        assert_eq!(row.try_get::<Option<FetchStatus>, _>("n").unwrap(), None);
        let err = row.try_get::<RunOutcome, _>("b").unwrap_err().to_string();
        assert!(err.contains("unknown RunOutcome \"bogus\""), "{err}");
    }
}
