package invalidation

import (
	"encoding/json"
	"time"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func timeDuration(d Duration) time.Duration { return time.Duration(d) }
