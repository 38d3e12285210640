//! X keysyms to the key names and text of [`InputKind::KeyPress`](crate::event::InputKind).
//!
//! Key names follow rdev's (`"KeyA"`, `"Num1"`, `"Return"`, `"ShiftLeft"`), so events read the
//! same whichever backend recorded them; keys without an rdev name are `"Unknown(<keycode>)"`,
//! as rdev writes them.

/// The rdev-style name of a key, from the keysym at its first (unshifted) level.
pub fn key_name(base_keysym: u32, keycode: u8) -> String {
    let named = match base_keysym {
        k @ 0x61..=0x7a => return format!("Key{}", (k as u8 - 0x20) as char),
        k @ 0x41..=0x5a => return format!("Key{}", k as u8 as char),
        k @ 0x30..=0x39 => return format!("Num{}", k as u8 as char),
        k @ 0xffbe..=0xffc9 => return format!("F{}", k - 0xffbe + 1),
        k @ 0xffb0..=0xffb9 => return format!("Kp{}", k - 0xffb0),
        0xff0d => "Return",
        0xff1b => "Escape",
        0xff08 => "Backspace",
        0xff09 => "Tab",
        0x20 => "Space",
        0xffe1 => "ShiftLeft",
        0xffe2 => "ShiftRight",
        0xffe3 => "ControlLeft",
        0xffe4 => "ControlRight",
        0xffe9 | 0xffe7 => "Alt",
        0xffea | 0xfe03 | 0xff7e => "AltGr",
        0xffeb => "MetaLeft",
        0xffec => "MetaRight",
        0xffe5 => "CapsLock",
        0xff7f => "NumLock",
        0xff14 => "ScrollLock",
        0xff61 => "PrintScreen",
        0xff13 => "Pause",
        0xff52 => "UpArrow",
        0xff54 => "DownArrow",
        0xff51 => "LeftArrow",
        0xff53 => "RightArrow",
        0xff50 => "Home",
        0xff57 => "End",
        0xff55 => "PageUp",
        0xff56 => "PageDown",
        0xff63 => "Insert",
        0xffff => "Delete",
        0x2d => "Minus",
        0x3d => "Equal",
        0x5b => "LeftBracket",
        0x5d => "RightBracket",
        0x3b => "SemiColon",
        0x27 => "Quote",
        0x60 => "BackQuote",
        0x5c => "BackSlash",
        0x2c => "Comma",
        0x2e => "Dot",
        0x2f => "Slash",
        0xff8d => "KpReturn",
        0xffad => "KpMinus",
        0xffab => "KpPlus",
        0xffaa => "KpMultiply",
        0xffaf => "KpDivide",
        0xff9f => "KpDelete",
        _ => return format!("Unknown({keycode})"),
    };
    named.to_string()
}

/// The character a keysym types, if it types one.
pub fn keysym_text(keysym: u32) -> Option<String> {
    let c = match keysym {
        0x20..=0x7e | 0xa0..=0xff => char::from_u32(keysym)?,
        0x0100_0100..=0x0110_ffff => char::from_u32(keysym - 0x0100_0000)?,
        0xff0d | 0xff8d => '\r',
        0xff09 => '\t',
        0xff08 => '\u{8}',
        0xffb0..=0xffb9 => char::from_u32(keysym - 0xffb0 + u32::from(b'0'))?,
        0xffaa => '*',
        0xffab => '+',
        0xffad => '-',
        0xffae => '.',
        0xffaf => '/',
        _ => return None,
    };
    Some(c.to_string())
}

/// Whether a keysym is a modifier we track for text: (shift, caps lock, level 3, control/alt).
pub(crate) fn modifier(keysym: u32) -> Option<Modifier> {
    match keysym {
        0xffe1 | 0xffe2 => Some(Modifier::Shift),
        0xffe5 => Some(Modifier::CapsLock),
        0xfe03 | 0xff7e => Some(Modifier::Level3),
        0xffe3 | 0xffe4 | 0xffe9 | 0xffea | 0xffe7 | 0xffe8 | 0xffeb | 0xffec => {
            Some(Modifier::Command)
        }
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Modifier {
    Shift,
    CapsLock,
    Level3,
    /// Control, Alt, Super: a key pressed with one of these types nothing.
    Command,
}

/// A core keyboard mapping (GetKeyboardMapping), updated by recorded ChangeKeyboardMapping
/// requests, plus the modifier state needed to tell what a key typed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keymap {
    min_keycode: u8,
    per_keycode: usize,
    keysyms: Vec<u32>,
    shift: u32,
    level3: u32,
    command: u32,
    caps: bool,
}

impl Keymap {
    pub(crate) fn new(min_keycode: u8, per_keycode: u8, keysyms: Vec<u32>) -> Self {
        Self { min_keycode, per_keycode: usize::from(per_keycode), keysyms, ..Self::default() }
    }

    fn level(&self, keycode: u8, level: usize) -> u32 {
        if keycode < self.min_keycode || level >= self.per_keycode {
            return 0;
        }
        let i = usize::from(keycode - self.min_keycode) * self.per_keycode + level;
        self.keysyms.get(i).copied().unwrap_or(0)
    }

    /// Apply a ChangeKeyboardMapping: `count` keycodes from `first`, `per` keysyms each.
    pub(crate) fn change(&mut self, first: u8, count: u8, per: u8, keysyms: &[u32]) {
        let per = usize::from(per);
        if first < self.min_keycode || per == 0 {
            return;
        }
        for k in 0..usize::from(count) {
            for level in 0..self.per_keycode {
                let value =
                    if level < per { keysyms.get(k * per + level).copied() } else { Some(0) };
                let idx = (usize::from(first - self.min_keycode) + k) * self.per_keycode + level;
                if let (Some(v), Some(slot)) = (value, self.keysyms.get_mut(idx)) {
                    *slot = v;
                }
            }
        }
    }

    /// A key went down: its name and the text it typed; updates the modifier state.
    pub(crate) fn press(&mut self, keycode: u8) -> (String, Option<String>) {
        let base = self.level(keycode, 0);
        let name = key_name(base, keycode);
        match modifier(base) {
            Some(Modifier::Shift) => self.shift += 1,
            Some(Modifier::Level3) => self.level3 += 1,
            Some(Modifier::Command) => self.command += 1,
            Some(Modifier::CapsLock) => self.caps = !self.caps,
            None => {}
        }
        if modifier(base).is_some() || self.command > 0 {
            return (name, None);
        }
        let group = if self.level3 > 0 { 2 } else { 0 };
        let lower = match self.level(keycode, group) {
            0 => base,
            k => k,
        };
        let upper = self.level(keycode, group + 1);
        let is_letter = char::from_u32(lower).is_some_and(|c| c.is_alphabetic());
        let shifted = (self.shift > 0) != (self.caps && is_letter);
        let keysym = match (shifted, upper) {
            (false, _) => lower,
            (true, 0) => uppercase_keysym(lower),
            (true, u) => u,
        };
        (name, keysym_text(keysym))
    }

    /// A key went up: its name; updates the modifier state.
    pub(crate) fn release(&mut self, keycode: u8) -> String {
        let base = self.level(keycode, 0);
        match modifier(base) {
            Some(Modifier::Shift) => self.shift = self.shift.saturating_sub(1),
            Some(Modifier::Level3) => self.level3 = self.level3.saturating_sub(1),
            Some(Modifier::Command) => self.command = self.command.saturating_sub(1),
            _ => {}
        }
        key_name(base, keycode)
    }
}

fn uppercase_keysym(keysym: u32) -> u32 {
    match keysym {
        0x61..=0x7a => keysym - 0x20,
        _ => keysym,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_text() {
        assert_eq!(key_name(0x61, 38), "KeyA");
        assert_eq!(key_name(0xffe1, 50), "ShiftLeft");
        assert_eq!(key_name(0x1234, 99), "Unknown(99)");
        assert_eq!(keysym_text(0x41).as_deref(), Some("A"));
        assert_eq!(keysym_text(0x010020ac).as_deref(), Some("€"));
        assert_eq!(keysym_text(0xffe1), None);
    }

    #[test]
    fn shift_and_scratch_remaps() {
        // keycode 10: a/A, keycode 11: Shift_L, keycode 12: unmapped until remapped.
        let mut map = Keymap::new(10, 2, vec![0x61, 0x41, 0xffe1, 0, 0, 0]);
        assert_eq!(map.press(10), ("KeyA".into(), Some("a".into())));
        assert_eq!(map.press(11).1, None);
        assert_eq!(map.press(10).1.as_deref(), Some("A"));
        map.release(11);
        assert_eq!(map.press(10).1.as_deref(), Some("a"));
        map.change(12, 1, 1, &[0xe9]);
        assert_eq!(map.press(12).1.as_deref(), Some("é"));
    }
}
