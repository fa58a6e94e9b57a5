-- Runs health.lua the way Argo CD runs a health script: the object in the
-- global `obj` as a table, the chunk returning {status = ..., message = ...}.
-- For tests, and to try an object by hand:
--
--   lua5.1 harness.lua health.lua object.lua [nostring]
--
-- object.lua returns the object as a Lua table. `nostring` leaves out the
-- string library, as Argo CD does without resource.customizations.useOpenLibs.
-- Prints the status on the first line, then `+` and the message, or `-` when
-- there is none.

local script_path, object_path, mode = arg[1], arg[2], arg[3]
local object = assert(loadfile(object_path))()
local script = assert(loadfile(script_path))

-- Only what Argo CD gives every health script (its base and table
-- libraries) and the string library useOpenLibs adds: no io, os or math,
-- so a script that reaches for them fails here too.
local env = { obj = object, table = table }
for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
  "tostring", "type", "unpack", "rawequal", "rawget", "rawset", "getmetatable", "setmetatable" }) do
  env[name] = _G[name]
end
if mode ~= "nostring" then
  env.string = string
end
env._G = env
setfenv(script, env)

local ok, result = pcall(script)
if not ok then
  io.stderr:write("error: ", tostring(result), "\n")
  os.exit(2)
end
-- Argo CD decodes the table as {status: string, message: string}.
if type(result) ~= "table" or type(result.status) ~= "string"
  or (result.message ~= nil and type(result.message) ~= "string") then
  io.stderr:write("error: the script did not return {status = string, message = string}\n")
  os.exit(3)
end
io.write(result.status, "\n")
if result.message == nil then
  io.write("-")
else
  io.write("+", result.message)
end
