-- Create a user unless the (casefolded) name is taken: check and create in
-- one step, so two replicas registering the same name at once make one user.
-- K[1] users hash, K[2] name index hash, K[3] user id counter
-- A[1] casefolded username, A[2] username as typed, A[3] password hash,
-- A[4] creation time (ISO 8601, UTC)
local function apply(K, A)
  local users, by_name, next_id = K[1], K[2], K[3]
  if redis.call('HEXISTS', by_name, A[1]) == 1 then
    return {error = 'username_taken'}
  end
  local id = tostring(redis.call('INCR', next_id))
  redis.call('HSET', users, id, cjson.encode(
    {id = id, username = A[2], password_hash = A[3], created_at = A[4]}))
  redis.call('HSET', by_name, A[1], id)
  return {user_id = id, username = A[2]}
end
