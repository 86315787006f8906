-- Cancels a running project (SPEC 6.4); returns the status it had.
local before = STATUS
end_project('cancelled')
flush()
return before or 'missing'
