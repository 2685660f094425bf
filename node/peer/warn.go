package peer

import (
	"sync"
	"time"
)

// warnEvery is how often a Server warns about one remote address: a
// scanner or a misconfigured member that retries in a loop costs one log
// line a minute, not one per connection.
const warnEvery = time.Minute

// warnTracked bounds the remote addresses a warnLimiter remembers; the
// warnings about addresses beyond it share one entry.
const warnTracked = 4096

// warnLimiter lets one warning per remote address and period through and
// counts the ones it holds back meanwhile. It is safe for concurrent use.
type warnLimiter struct {
	every time.Duration

	mu struct {
		sync.Mutex
		remotes map[string]*warnState
	}
}

type warnState struct {
	at   time.Time // when the last warning was let through
	held int       // warnings held back since
}

func newWarnLimiter(every time.Duration) *warnLimiter {
	l := &warnLimiter{every: every}
	l.mu.remotes = make(map[string]*warnState)
	return l
}

// allow reports whether a warning about remote may be logged at now, and
// how many were held back since the last one that was.
func (l *warnLimiter) allow(remote string, now time.Time) (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.mu.remotes[remote]
	if st == nil {
		if len(l.mu.remotes) >= warnTracked {
			l.forgetLocked(now)
		}
		if len(l.mu.remotes) >= warnTracked {
			remote = "" // the shared entry of the untracked addresses
			st = l.mu.remotes[remote]
		}
	}
	if st == nil {
		l.mu.remotes[remote] = &warnState{at: now}
		return 0, true
	}
	if now.Sub(st.at) < l.every {
		st.held++
		return 0, false
	}
	held = st.held
	st.at, st.held = now, 0
	return held, true
}

// forgetLocked drops the addresses whose last warning is a period old and
// that have nothing held back.
func (l *warnLimiter) forgetLocked(now time.Time) {
	for k, st := range l.mu.remotes {
		if st.held == 0 && now.Sub(st.at) >= l.every {
			delete(l.mu.remotes, k)
		}
	}
}
