-- upgrade-guard's health check for Argo CD, one script for both
-- resource.customizations.health.apps_StatefulSet and apps_Deployment.
--
-- Argo CD's built-in check calls a partitioned StatefulSet Healthy once the
-- pods above the partition are updated, so a refresh upgrade-guard holds
-- after its first unit shows green. This script reads upgrade-guard's record
-- (the annotation upgradeguard.io/refresh, compact JSON written by
-- serde_json from RefreshRecord) and says what the refresh is doing:
--   RollingOut, RollingBack -> Progressing
--   Paused                  -> Suspended
--   Failed                  -> Degraded
--   Completed, or no record -> Argo CD's built-in logic, re-implemented below
--                              (a custom check replaces the built-in one)
--   unreadable record, unknown state -> Degraded: upgrade-guard does not act
--     on a record it cannot read, so the refresh is stuck; the built-in logic
--     would call a held partition Healthy, the very thing this check fixes.
-- The message is the next action, worded as `upgrade-guard status` words it.
--
-- Argo CD runs gopher-lua (Lua 5.1) with no JSON decoder and, unless
-- resource.customizations.useOpenLibs.<group>_<kind> is "true", without the
-- string library. Objects without a record need neither; reading a record
-- needs string.find/sub/byte/char. Nothing from the object is ever run as
-- code (no load, no loadstring).

local RECORD = "upgradeguard.io/refresh"

local function health(status, message)
  return { status = status, message = message }
end

-- Built-in logic --------------------------------------------------------
-- Mirrors Argo CD's gitops-engine pkg/health: getAppsv1StatefulSetHealth
-- (health_statefulset.go) and getAppsv1DeploymentHealth
-- (health_deployment.go), with Go's zero values for absent fields, the same
-- order of checks and the same messages. Only arithmetic, comparison and
-- concatenation: it runs without the string library. (An object being
-- deleted never gets here: Argo CD calls it Progressing before any check.)

local function statefulset_builtin(o)
  local spec, status = o.spec or {}, o.status or {}
  local generation = (o.metadata or {}).generation or 0
  local observed = status.observedGeneration or 0
  if observed == 0 or generation > observed then
    return health("Progressing", "Waiting for statefulset spec update to be observed...")
  end
  local replicas = spec.replicas
  local ready = status.readyReplicas or 0
  if replicas ~= nil and ready < replicas then
    return health("Progressing", "Waiting for " .. (replicas - ready) .. " pods to be ready...")
  end
  local strategy = spec.updateStrategy or {}
  local updated = status.updatedReplicas or 0
  if strategy.type == "RollingUpdate" and strategy.rollingUpdate ~= nil then
    local partition = strategy.rollingUpdate.partition
    if replicas ~= nil and partition ~= nil and updated < replicas - partition then
      return health("Progressing", "Waiting for partitioned roll out to finish: " .. updated
        .. " out of " .. (replicas - partition) .. " new pods have been updated...")
    end
    return health("Healthy", "partitioned roll out complete: " .. updated .. " new pods have been updated...")
  end
  if strategy.type == "OnDelete" then
    return health("Healthy", "statefulset has " .. ready .. " ready pods")
  end
  local current_revision = status.currentRevision or ""
  local update_revision = status.updateRevision or ""
  if update_revision ~= current_revision then
    return health("Progressing", "waiting for statefulset rolling update to complete " .. updated
      .. " pods at revision " .. update_revision .. "...")
  end
  return health("Healthy", "statefulset rolling update complete " .. (status.currentReplicas or 0)
    .. " pods at revision " .. current_revision .. "...")
end

local function deployment_builtin(o)
  local spec, status = o.spec or {}, o.status or {}
  if spec.paused == true then
    return health("Suspended", "Deployment is paused")
  end
  local generation = (o.metadata or {}).generation or 0
  local observed = status.observedGeneration or 0
  if generation > observed then
    return health("Progressing", "Waiting for rollout to finish: observed deployment generation less than desired generation")
  end
  local progressing
  for _, condition in ipairs(status.conditions or {}) do
    if condition.type == "Progressing" then
      progressing = condition
      break
    end
  end
  local updated = status.updatedReplicas or 0
  local replicas = status.replicas or 0
  local available = status.availableReplicas or 0
  if progressing ~= nil and progressing.reason == "ProgressDeadlineExceeded" then
    return health("Degraded", "Deployment \"" .. ((o.metadata or {}).name or "") .. "\" exceeded its progress deadline")
  elseif spec.replicas ~= nil and updated < spec.replicas then
    return health("Progressing", "Waiting for rollout to finish: " .. updated .. " out of " .. spec.replicas
      .. " new replicas have been updated...")
  elseif replicas > updated then
    return health("Progressing", "Waiting for rollout to finish: " .. (replicas - updated)
      .. " old replicas are pending termination...")
  elseif available < updated then
    return health("Progressing", "Waiting for rollout to finish: " .. available .. " of " .. updated
      .. " updated replicas are available...")
  end
  return health("Healthy")
end

local function builtin(o)
  if o.kind == "Deployment" then
    return deployment_builtin(o)
  end
  return statefulset_builtin(o)
end

-- Reading the record ----------------------------------------------------
-- A small strict JSON reader: the whole text must be one JSON value, as
-- serde_json (and so upgrade-guard) requires. Only plain string functions
-- (find with single-character classes, sub, byte, char): Lua patterns
-- cannot balance quotes, and escaped quotes in a reason must not end it.

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

-- Lua 5.1 has no bit operations: split the code point with % and /.
local function utf8_char(cp)
  if cp < 0x80 then
    return string.char(cp)
  elseif cp < 0x800 then
    return string.char(0xC0 + (cp - cp % 0x40) / 0x40, 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return string.char(0xE0 + (cp - cp % 0x1000) / 0x1000,
      0x80 + ((cp - cp % 0x40) / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + (cp - cp % 0x40000) / 0x40000, 0x80 + ((cp - cp % 0x1000) / 0x1000) % 0x40,
    0x80 + ((cp - cp % 0x40) / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local function decode_json(text)
  local pos = 1
  local depth = 0

  local function fail(what)
    error(what .. " at byte " .. pos, 0)
  end

  local function skip_space()
    pos = string.find(text, "[^ \t\r\n]", pos) or #text + 1
  end

  local function hex4(at)
    local digits = string.sub(text, at, at + 3)
    if not string.find(digits, "^%x%x%x%x$") then
      pos = at
      fail("bad \\u escape")
    end
    return tonumber(digits, 16)
  end

  local function read_string()
    local parts, i = {}, pos + 1
    while true do
      local stop = string.find(text, '[%c"\\]', i)
      if stop == nil then
        pos = #text + 1
        fail("unterminated string")
      end
      parts[#parts + 1] = string.sub(text, i, stop - 1)
      local c = string.sub(text, stop, stop)
      if c == '"' then
        pos = stop + 1
        return table.concat(parts)
      elseif c ~= "\\" then
        -- JSON forbids raw control characters in strings; DEL is allowed.
        if string.byte(c) ~= 127 then
          pos = stop
          fail("control character in string")
        end
        parts[#parts + 1] = c
        i = stop + 1
      else
        local e = string.sub(text, stop + 1, stop + 1)
        if e == "u" then
          local cp = hex4(stop + 2)
          i = stop + 6
          if cp >= 0xD800 and cp <= 0xDBFF then
            if string.sub(text, i, i + 1) ~= "\\u" then
              pos = stop
              fail("lone surrogate")
            end
            local low = hex4(i + 2)
            if low < 0xDC00 or low > 0xDFFF then
              pos = i
              fail("lone surrogate")
            end
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
            i = i + 6
          elseif cp >= 0xDC00 and cp <= 0xDFFF then
            pos = stop
            fail("lone surrogate")
          end
          parts[#parts + 1] = utf8_char(cp)
        elseif ESCAPES[e] ~= nil then
          parts[#parts + 1] = ESCAPES[e]
          i = stop + 2
        else
          pos = stop
          fail("bad escape")
        end
      end
    end
  end

  local read_value

  local function read_container(close, read_item)
    depth = depth + 1
    if depth > 16 then
      fail("nested too deep")
    end
    pos = pos + 1
    skip_space()
    if string.sub(text, pos, pos) == close then
      pos = pos + 1
      depth = depth - 1
      return
    end
    while true do
      read_item()
      skip_space()
      local c = string.sub(text, pos, pos)
      pos = pos + 1
      if c == close then
        depth = depth - 1
        return
      elseif c ~= "," then
        pos = pos - 1
        fail("expected ',' or '" .. close .. "'")
      end
      skip_space()
    end
  end

  local function read_object()
    local object = {}
    read_container("}", function()
      if string.sub(text, pos, pos) ~= '"' then
        fail("expected a key")
      end
      local key = read_string()
      skip_space()
      if string.sub(text, pos, pos) ~= ":" then
        fail("expected ':'")
      end
      pos = pos + 1
      object[key] = read_value()
    end)
    return object
  end

  local function read_array()
    local array = {}
    read_container("]", function()
      array[#array + 1] = read_value()
    end)
    return array
  end

  read_value = function()
    skip_space()
    local c = string.sub(text, pos, pos)
    if c == "{" then
      return read_object()
    elseif c == "[" then
      return read_array()
    elseif c == '"' then
      return read_string()
    elseif string.sub(text, pos, pos + 3) == "true" then
      pos = pos + 4
      return true
    elseif string.sub(text, pos, pos + 4) == "false" then
      pos = pos + 5
      return false
    elseif string.sub(text, pos, pos + 3) == "null" then
      pos = pos + 4
      return nil
    elseif string.find(text, "^%-?0%d", pos) then
      fail("leading zero")
    end
    local _, last = string.find(text, "^%-?%d+", pos)
    if last == nil then
      fail("unexpected character")
    end
    local first = pos
    pos = last + 1
    local _, fraction = string.find(text, "^%.%d+", pos)
    pos = (fraction or pos - 1) + 1
    local _, exponent = string.find(text, "^[eE][+%-]?%d+", pos)
    pos = (exponent or pos - 1) + 1
    return tonumber(string.sub(text, first, pos - 1))
  end

  local value = read_value()
  skip_space()
  if pos <= #text then
    fail("text after the value")
  end
  return value
end

-- What to do next -------------------------------------------------------
-- The same texts and commands as src/refresh (the step's Next), on one
-- line: `<next>; run: <command>`, as `upgrade-guard status` prints them on
-- two.

local STATES = { RollingOut = true, RollingBack = true, Paused = true, Failed = true, Completed = true }

local function is_hook_failure(reason)
  -- The hook gate's failures: "the preUnit hook of unit 2 failed (Job ...)",
  -- "the postRefresh hook ... did not complete within ...", and a Job of
  -- that name upgrade-guard did not make.
  return string.find(reason, "^the pre%a+ hook") ~= nil
    or string.find(reason, "^the post%a+ hook") ~= nil
    or string.find(reason, "^a Job named ") ~= nil
end

local function refresh_health(o, text)
  local record = decode_json(text)
  if type(record) ~= "table" then
    error("not a JSON object", 0)
  end
  local state = record.state
  if type(state) ~= "string" or STATES[state] == nil then
    error("unknown state " .. (type(state) == "string" and ('"' .. state .. '"') or "(none)"), 0)
  end
  if state == "Completed" then
    return nil
  end
  -- The fields read here, typed as upgrade-guard requires them.
  for _, field in ipairs({ "from", "to", "started", "reason", "rollback", "automatic" }) do
    local want = (field == "rollback" or field == "automatic") and "boolean" or "string"
    local optional = field ~= "from" and field ~= "to" and field ~= "started"
    if type(record[field]) ~= want and not (optional and record[field] == nil) then
      error(field .. " is not a " .. want, 0)
    end
  end
  local from, to, reason = record.from, record.to, record.reason
  local ns = o.metadata.namespace or "default"
  local name = o.metadata.name or ""
  local id = ns .. "/" .. name
  local deployment = o.kind == "Deployment"
  local what = "refresh"
  if record.rollback == true then
    what = record.automatic == true and "automatic rollback (onFailure: rollback)" or "rollback"
  end
  local head = what .. " " .. from .. " → " .. to

  if state == "Paused" then
    return health("Suspended", (reason or (head .. " is paused")) .. "; run: upgrade-guard resume " .. id)
  end
  if state == "Failed" then
    local why = reason or (head .. " failed")
    local force = "upgrade-guard resume --force --reason TEXT " .. id
    if is_hook_failure(why) then
      return health("Degraded", why .. ": run it again (`upgrade-guard retry " .. id .. "`) or skip it (`"
        .. force .. "`); run: upgrade-guard retry " .. id)
    elseif record.rollback == true then
      return health("Degraded", why .. ": the rollback to " .. to .. " is held; look at the pods (`kubectl -n "
        .. ns .. " get pods`) or go on anyway; run: " .. force)
    end
    local resource = deployment and "deployment" or "statefulset"
    return health("Degraded", why .. ": roll back to " .. from .. " (`kubectl -n " .. ns .. " rollout undo "
      .. resource .. "/" .. name .. "`) or go on anyway; run: " .. force)
  end

  -- RollingOut or RollingBack.
  local spec, status = o.spec or {}, o.status or {}
  local detail
  if deployment then
    detail = (status.updatedReplicas or 0) .. " of " .. (spec.replicas or 1) .. " pods refreshed, "
      .. (status.availableReplicas or 0) .. " available"
  else
    local strategy = spec.updateStrategy or {}
    local partition = (strategy.rollingUpdate or {}).partition or 0
    if strategy.type == "OnDelete" then
      detail = "updateStrategy OnDelete: delete its pods to refresh them, highest ordinal first"
    elseif partition >= (spec.replicas or 1) then
      detail = "starting, no unit restarted yet"
    else
      detail = "refreshing unit " .. partition .. " (" .. name .. "-" .. partition .. ")"
    end
  end
  return health("Progressing", head .. ": " .. detail .. "; run: upgrade-guard status " .. id)
end

-- The check -------------------------------------------------------------

local annotations = (obj.metadata or {}).annotations
local text = annotations and annotations[RECORD]
if text == nil then
  return builtin(obj)
end
local ns = (obj.metadata or {}).namespace or "default"
local next_step = "; run: upgrade-guard status " .. ns .. "/" .. ((obj.metadata or {}).name or "")
if string == nil then
  return health("Degraded", "the " .. RECORD .. " record cannot be read without Lua's string library: set "
    .. "resource.customizations.useOpenLibs.apps_" .. (obj.kind or "StatefulSet") .. ' to "true"' .. next_step)
end
local ok, result = pcall(refresh_health, obj, text)
if not ok then
  return health("Degraded", "the " .. RECORD .. " record cannot be read: " .. tostring(result) .. next_step)
end
return result or builtin(obj)
