//! The little dense linear algebra the models need: symmetric positive-definite
//! solves and inverses by Cholesky, on p x p matrices with p in the tens.

/// Row-major p x p matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub n: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn zeros(n: usize) -> Self {
        Self {
            n,
            data: vec![0.0; n * n],
        }
    }
    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n);
        for i in 0..n {
            m[(i, i)] = 1.0;
        }
        m
    }
    /// Lower-triangular Cholesky factor, or None when not positive definite.
    pub fn cholesky(&self) -> Option<Matrix> {
        let n = self.n;
        let mut l = Matrix::zeros(n);
        for j in 0..n {
            let mut d = self[(j, j)];
            for k in 0..j {
                d -= l[(j, k)] * l[(j, k)];
            }
            // Relative tolerance: a pivot this small means the columns are dependent.
            if !(d > 1e-12 * self[(j, j)].abs().max(1e-300)) {
                return None;
            }
            let d = d.sqrt();
            l[(j, j)] = d;
            for i in j + 1..n {
                let mut s = self[(i, j)];
                for k in 0..j {
                    s -= l[(i, k)] * l[(j, k)];
                }
                l[(i, j)] = s / d;
            }
        }
        Some(l)
    }

    /// Solve `self * x = b` given this matrix's Cholesky factor `l`.
    pub fn cholesky_solve(l: &Matrix, b: &[f64]) -> Vec<f64> {
        let n = l.n;
        let mut y = b.to_vec();
        for i in 0..n {
            for k in 0..i {
                y[i] -= l[(i, k)] * y[k];
            }
            y[i] /= l[(i, i)];
        }
        for i in (0..n).rev() {
            for k in i + 1..n {
                y[i] -= l[(k, i)] * y[k];
            }
            y[i] /= l[(i, i)];
        }
        y
    }

    /// Inverse of a symmetric positive-definite matrix from its Cholesky factor.
    pub fn cholesky_inverse(l: &Matrix) -> Matrix {
        let n = l.n;
        let mut inv = Matrix::zeros(n);
        for j in 0..n {
            let mut e = vec![0.0; n];
            e[j] = 1.0;
            let col = Self::cholesky_solve(l, &e);
            for i in 0..n {
                inv[(i, j)] = col[i];
            }
        }
        inv
    }
}

impl std::ops::Index<(usize, usize)> for Matrix {
    type Output = f64;
    fn index(&self, (i, j): (usize, usize)) -> &f64 {
        &self.data[i * self.n + j]
    }
}

impl std::ops::IndexMut<(usize, usize)> for Matrix {
    fn index_mut(&mut self, (i, j): (usize, usize)) -> &mut f64 {
        &mut self.data[i * self.n + j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_inverts_a_known_system() {
        // A = [[4, 2], [2, 3]]: inverse = [[3, -2], [-2, 4]] / 8.
        let a = Matrix {
            n: 2,
            data: vec![4.0, 2.0, 2.0, 3.0],
        };
        let l = a.cholesky().unwrap();
        let x = Matrix::cholesky_solve(&l, &[2.0, 1.0]);
        assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15);
        let inv = Matrix::cholesky_inverse(&l);
        assert!((inv[(0, 0)] - 0.375).abs() < 1e-15);
        assert!((inv[(0, 1)] + 0.25).abs() < 1e-15);
        assert!((inv[(1, 1)] - 0.5).abs() < 1e-15);
    }

    #[test]
    fn singular_has_no_cholesky() {
        let a = Matrix {
            n: 2,
            data: vec![1.0, 2.0, 2.0, 4.0],
        };
        assert!(a.cholesky().is_none());
    }
}
