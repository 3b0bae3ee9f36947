"""Generated protobuf packages (``tmsp.<area>.v1``); run ``make proto`` to regenerate."""
