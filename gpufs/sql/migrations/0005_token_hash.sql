-- Keys created by this server are stored only as a SHA-256 hash; `key` then holds a
-- public identifier that can never authenticate (a row with a hash matches by hash only).
-- Upstream rows keep their plain key and no hash, and keep working.
alter table tokens add column if not exists key_hash char(64);
create unique index if not exists idx_tokens_key_hash on tokens (key_hash) where key_hash is not null;
