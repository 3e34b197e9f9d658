-- Small uniform shapes for the receptionist helpers: every record has an
-- `id`, a speakable `name` and the full FHIR table in `resource`, plus the
-- few fields an agent reads out.
local patient = require "ecw.patient"

local type, ipairs = type, ipairs
local tbl_sort = table.sort

local _M = {}

local function str(v)
  return type(v) == "string" and v ~= "" and v or nil
end

local function list(v)
  return type(v) == "table" and v or {}
end

-- CodeableConcept -> text, else the first coding display.
local function concept_text(cc)
  if type(cc) ~= "table" then
    return nil
  end
  if str(cc.text) then
    return cc.text
  end
  for _, c in ipairs(list(cc.coding)) do
    if type(c) == "table" and str(c.display) then
      return c.display
    end
  end
  return nil
end
_M.concept_text = concept_text

local function concept_code(cc)
  for _, c in ipairs(list(type(cc) == "table" and cc.coding)) do
    if type(c) == "table" and str(c.code) then
      return c.code
    end
  end
  return nil
end

local function reference_display(ref)
  return type(ref) == "table" and str(ref.display) or nil
end

function _M.practitioner(r)
  local n = patient.pick_name(r.name)
  return {
    id = str(r.id),
    name = patient.speakable(n, true),
    family = n and str(n.family),
    given = n and str(list(n.given)[1]),
    prefix = n and str(list(n.prefix)[1]),
    resource = r,
  }
end

function _M.medication(r)
  local dosage = list(r.dosageInstruction)[1]
  return {
    id = str(r.id),
    name = concept_text(r.medicationCodeableConcept)
      or reference_display(r.medicationReference),
    dosage = type(dosage) == "table" and str(dosage.text) or nil,
    authored = str(r.authoredOn),
    status = str(r.status),
    resource = r,
  }
end

function _M.allergy(r)
  local reaction = list(r.reaction)[1]
  local manifestation = type(reaction) == "table" and list(reaction.manifestation)[1]
  return {
    id = str(r.id),
    name = concept_text(r.code),
    reaction = concept_text(manifestation),
    criticality = str(r.criticality),
    status = concept_code(r.clinicalStatus),
    resource = r,
  }
end

-- Allergies an agent should mention: not resolved/inactive, and not
-- refuted or entered in error.
function _M.allergy_current(r)
  local clinical = concept_code(r.clinicalStatus)
  local verification = concept_code(r.verificationStatus)
  return clinical ~= "inactive" and clinical ~= "resolved"
    and verification ~= "refuted" and verification ~= "entered-in-error"
end

function _M.coverage(r)
  local plan
  for _, c in ipairs(list(r.class)) do
    if type(c) == "table" and concept_code(c.type) == "plan" then
      plan = str(c.name) or str(c.value)
      break
    end
  end
  local payor = list(r.payor)[1]
  local period = type(r.period) == "table" and r.period or {}
  return {
    id = str(r.id),
    name = reference_display(payor) or concept_text(r.type),
    payor = reference_display(payor),
    plan = plan,
    status = str(r.status),
    subscriber_id = str(r.subscriberId),
    start = str(period.start),
    ["end"] = str(period["end"]),
    resource = r,
  }
end

function _M.encounter(r)
  local period = type(r.period) == "table" and r.period or {}
  local class = type(r.class) == "table" and r.class or {}
  local who = list(r.participant)[1]
  local reason = concept_text(list(r.reasonCode)[1])
  return {
    id = str(r.id),
    name = concept_text(list(r.type)[1]) or str(class.display) or str(class.code),
    date = str(period.start),
    ["end"] = str(period["end"]),
    status = str(r.status),
    class = str(class.code),
    reason = reason,
    practitioner = type(who) == "table" and reference_display(who.individual) or nil,
    resource = r,
  }
end

-- Most recent first; undated records last, in server order.
function _M.sort_by_date_desc(items, field)
  for i, it in ipairs(items) do
    it._order = i
  end
  tbl_sort(items, function(a, b)
    local x, y = a[field], b[field]
    if x and y and x ~= y then
      return x > y       -- ISO 8601 strings of one form sort as text
    elseif x and not y then
      return true
    elseif y and not x then
      return false
    end
    return a._order < b._order
  end)
  for _, it in ipairs(items) do
    it._order = nil
  end
  return items
end

return _M
