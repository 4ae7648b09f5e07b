-- API keys (the upstream `tokens` table).

-- name: token-lookup(key, key_hash)^
-- The active key presented: by hash for keys created here, by plain value for upstream keys.
select id, user_id, access_level
  from tokens
 where ((key_hash = :key_hash) or (key_hash is null and key = :key))
   and coalesce(status, 1) = 1
   and deleted_at is null
   and (coalesce(expired_time, -1) = -1 or expired_time > extract(epoch from now()))
 limit 1;

-- name: token-create(user_id, public_id, key_hash, expired_time, access_level)^
-- A new key; only its hash is kept.
insert into tokens (user_id, key, key_hash, status, expired_time, access_level)
values (:user_id, :public_id, :key_hash, 1, :expired_time, :access_level)
returning id;

-- name: token-list()
-- Every key that is not deleted, with its state; never the secret.
select id, user_id, access_level, status, expired_time, key_hash is not null as hashed,
       left(key, 8) as key_prefix
  from tokens
 where deleted_at is null
 order by id;

-- name: token-revoke(id)^
-- Revoke a key: it stops authenticating within AUTH_CACHE_SECONDS.
update tokens
   set status = 2, deleted_at = now()
 where id = :id and deleted_at is null
returning id;
