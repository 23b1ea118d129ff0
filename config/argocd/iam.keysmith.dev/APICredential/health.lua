-- Argo CD health check for keysmith's APICredential (iam.keysmith.dev).
--
-- It reads the conditions keysmith writes (docs/gitops.md) and, once keysmith has written
-- them, gives the verdict kstatus (and so Flux) gives:
--   Healthy      Ready=True: Issued, or deliberately Inactive or Expired (the message says so)
--   Degraded     Stalled=True, a person must act: InvalidSpec, SecretConflict,
--                SecretModified, SecretMissing; also Ready=False without Stalled, which
--                keysmith does not write (fail safe: never Healthy when Ready is False)
--   Progressing  no status or no Ready condition yet, Ready=Unknown, Reconciling=True,
--                or a status.observedGeneration that is not metadata.generation
-- Argo CD runs health checks without Lua's string library: use only base functions.

local hs = { status = "Progressing", message = "Waiting for keysmith to reconcile the credential" }

local function findCondition(conditions, conditionType)
  for _, c in ipairs(conditions) do
    if type(c) == "table" and c.type == conditionType then
      return c
    end
  end
  return nil
end

-- text is the condition's message, else its reason, else fallback.
local function text(c, fallback)
  if type(c.message) == "string" and c.message ~= "" then
    return c.message
  end
  if type(c.reason) == "string" and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
if type(status) ~= "table" then
  return hs
end

local generation = nil
if type(obj.metadata) == "table" then
  generation = obj.metadata.generation
end
local observed = status.observedGeneration
if type(generation) == "number" and type(observed) == "number" and observed ~= generation then
  hs.message = "Waiting for keysmith to observe generation " .. generation ..
    " (observed " .. observed .. ")"
  return hs
end

local conditions = status.conditions
if type(conditions) ~= "table" then
  return hs
end

local stalled = findCondition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "A person must act on this credential")
  return hs
end

local reconciling = findCondition(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = text(reconciling, hs.message)
  return hs
end

local ready = findCondition(conditions, "Ready")
if ready == nil then
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  if ready.reason == "Inactive" or ready.reason == "Expired" then
    hs.message = ready.reason .. " as declared: " .. text(ready, "token servers refuse this credential")
  else
    hs.message = text(ready, "Credential issued")
  end
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = text(ready, "Ready is False")
else
  hs.message = text(ready, hs.message)
end
return hs
