-- Model catalogue: what models/insert and models/get run.

-- name: insert-model(name, version, version_code, engine_type, is_active, min_memory_mb, min_gpu_memory_gb, download_url, checksum, expected_size, given)^
-- Upsert by (name, version). On update an optional field keeps its stored value unless
-- its name is in `given` (then an explicit null clears it); is_active defaults to true on create.
insert into client_models (name, version, version_code, engine_type, is_active, min_memory_mb,
                           min_gpu_memory_gb, download_url, checksum, expected_size)
values (:name, :version, :version_code, :engine_type, coalesce(:is_active, true), :min_memory_mb,
        :min_gpu_memory_gb, :download_url, :checksum, :expected_size)
    on conflict (name, version) do update
   set version_code      = excluded.version_code,
       engine_type       = excluded.engine_type,
       is_active         = case when 'is_active' = any(:given::text[]) then excluded.is_active
                                else client_models.is_active end,
       min_memory_mb     = case when 'min_memory_mb' = any(:given::text[]) then excluded.min_memory_mb
                                else client_models.min_memory_mb end,
       min_gpu_memory_gb = case when 'min_gpu_memory_gb' = any(:given::text[]) then excluded.min_gpu_memory_gb
                                else client_models.min_gpu_memory_gb end,
       download_url      = case when 'download_url' = any(:given::text[]) then excluded.download_url
                                else client_models.download_url end,
       checksum          = case when 'checksum' = any(:given::text[]) then excluded.checksum
                                else client_models.checksum end,
       expected_size     = case when 'expected_size' = any(:given::text[]) then excluded.expected_size
                                else client_models.expected_size end
returning id;

-- name: models-list(is_active, min_gpu_memory_gb)
-- The catalogue, largest GPU requirement first; `min_gpu_memory_gb` keeps what fits a GPU of that size.
select id, name, version, version_code, engine_type, coalesce(is_active, true) as is_active,
       min_memory_mb, min_gpu_memory_gb, download_url, checksum, expected_size, created_at
  from client_models
 where (:is_active::boolean is null or coalesce(is_active, true) = :is_active)
   and (:min_gpu_memory_gb::integer is null or min_gpu_memory_gb is null
        or min_gpu_memory_gb <= :min_gpu_memory_gb)
 order by coalesce(min_gpu_memory_gb, 0) desc, version_code desc, created_at desc;
